//! Integration tests of the serve capability.
