//! Core rule tests.
