//! Cluster configuration (to be written).
