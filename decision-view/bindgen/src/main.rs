//! `wis-bindgen <decision_view.wasm> <out-dir>`: writes the browser module (ES module glue +
//! processed `.wasm`) for the decision view page, the way `wasm-bindgen --target web` does.
//!
//! wasm-bindgen's command-line tool is installed with `cargo install`, which resolves its
//! dependencies afresh (or from its own lock file, which names crates this machine's registry may
//! not serve). As a workspace member its library is pinned by our Cargo.lock and built with
//! `--locked` like everything else.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, out_dir] = args.as_slice() else {
        eprintln!("usage: wis-bindgen <decision_view.wasm> <out-dir>");
        return ExitCode::from(2);
    };
    let (input, out_dir) = (PathBuf::from(input), PathBuf::from(out_dir));
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    let generated = bindgen
        .input_path(&input)
        .web(true)
        .and_then(|b| b.typescript(false).omit_default_module_path(false).out_name("decision_view").generate(&out_dir));
    match generated {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wis-bindgen: {}: {e:#}", input.display());
            ExitCode::FAILURE
        }
    }
}
