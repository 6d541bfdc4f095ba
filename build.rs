// The embedded course lab, image catalog and cloud-init templates are compiled in: rebuild when they change.
fn main() {
    for dir in ["labs", "images", "cloud-init"] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
