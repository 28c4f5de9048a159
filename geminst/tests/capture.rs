//! Integration tests of the capture capability.
