//! TODO(issue 7): prometheus
