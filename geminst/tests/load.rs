//! Integration tests of the load capability.
