//! `vassal keygen`: a new 32-byte gossip encryption key, base64.

use std::process::ExitCode;

use base64::Engine as _;

pub fn run(args: &[String]) -> ExitCode {
    if args
        .iter()
        .any(|a| a == "-h" || a == "-help" || a == "--help")
    {
        println!("Usage: vassal keygen\n\n  Generates a new encryption key that can be used to configure the\n  agent to encrypt traffic. The output of this command is already\n  in the proper format that the agent expects.");
        return ExitCode::SUCCESS;
    }
    let mut key = [0u8; 32];
    if let Err(e) = getrandom::getrandom(&mut key) {
        eprintln!("Error reading random data: {e}");
        return ExitCode::FAILURE;
    }
    println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
    ExitCode::SUCCESS
}
