//! Compiles `schemas/*.proto` with prost, using protox so that no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schemas = ["schemas/rim.proto"];
    for schema in schemas {
        println!("cargo:rerun-if-changed={schema}");
    }
    let descriptors = protox::compile(schemas, ["schemas"])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
