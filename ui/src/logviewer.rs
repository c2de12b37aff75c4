//! TODO(issue 7): logviewer
