//! The provider binary Terraform starts: serves the plugin protocol on a local port and prints the
//! handshake line Terraform reads (see the crate docs of `terraform_provider_rim`).

use terraform_provider_rim::RimProvider;

fn main() {
    // tf-provider appends a captured backtrace to every diagnostic when backtraces are enabled
    // (RUST_BACKTRACE=1 in the operator's shell); diagnostics are for operators, so library
    // backtraces are off (panics still honour RUST_BACKTRACE).
    // SAFETY: no other thread exists yet (the runtime is built below), so nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("terraform-provider-rim: cannot start the async runtime: {err}");
            std::process::exit(1);
        }
    };
    if let Err(err) = runtime.block_on(tf_provider::serve("rim", RimProvider::default())) {
        eprintln!("terraform-provider-rim: {err:#}");
        std::process::exit(1);
    }
}
