//! # squall-kafka: Kafka spouts and bolts for Squall (Storm's storm-kafka-client)
#![deny(missing_docs)]
