//! vassal-node
