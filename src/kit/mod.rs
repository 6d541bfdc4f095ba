//! Class kits: an instructor's built lab, exported once and imported by every student (see the README).

pub mod qcow2;
