//! Prints the table compiled for one node from a model JSON file (`{"pods":[],"namespaces":[],"policies":[]}`) and
//! policy manifests: `cargo run -p weft-policy --example render -- MODEL.json NODE [POLICY.yaml...]`.
use weft_policy::{compile, parse_policies_yaml, CompileOptions, Model};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: render MODEL.json NODE [POLICY.yaml...]");
        std::process::exit(2);
    }
    let mut model: Model =
        serde_json::from_str(&std::fs::read_to_string(&args[1]).expect("read model")).expect("model");
    for path in &args[3..] {
        model.policies.extend(parse_policies_yaml(&std::fs::read_to_string(path).expect("read")).expect("policies"));
    }
    print!("{}", compile(&model, &args[2], &CompileOptions { log_drops: true, ..Default::default() }).render());
}
