//! Development ZooKeeper (to be written).
