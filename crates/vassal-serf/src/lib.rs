//! vassal-serf
