//! # squall-multilang: shell components speaking Storm's multilang protocol
#![deny(missing_docs)]
