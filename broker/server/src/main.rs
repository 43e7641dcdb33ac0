fn main() { eprintln!("ferromq: roles not built yet"); std::process::exit(2); }
