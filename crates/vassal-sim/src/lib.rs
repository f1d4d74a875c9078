//! vassal-sim
