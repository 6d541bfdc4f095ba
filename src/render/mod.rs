//! Pure functions from a validated lab to the documents libvirt and cloud-init read. Nothing here does I/O.

pub mod cloud_init;
pub mod names;
pub mod plan;
pub mod xml;

pub use xml::Accel;
