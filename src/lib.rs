//! `lab`: identical multi-machine Linux labs on libvirt, with whole-lab checkpoints. See ARCHITECTURE.md for the
//! map of modules and the path a lab takes through them.

pub mod cancel;
pub mod checkpoint;
pub mod cli;
pub mod doctor;
pub mod download;
pub mod fsutil;
pub mod host;
pub mod kit;
pub mod libvirt;
pub mod model;
pub mod orchestrator;
pub mod render;
pub mod ssh;
pub mod state;
pub mod term;
pub mod ui;
