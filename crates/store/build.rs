//! Nothing is generated here. The build-dependency on protoc-bin-vendored keeps the vendored protoc in the
//! dependency graph, so cargo downloads and unpacks it before etcd-client's build script runs; scripts/protoc
//! (PROTOC, set in .cargo/config.toml) executes it. Checking the path here makes a missing binary fail loudly.
fn main() {
    if let Err(e) = protoc_bin_vendored::protoc_bin_path() {
        println!("cargo:warning=no vendored protoc for this platform ({e}); set PROTOC to a system protoc");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
