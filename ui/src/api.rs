//! TODO(issue 7): api
