//! Integration tests of the trace capability.
