//! `telbus-ifgen`: compile a TelAF `.api` file to D-Bus introspection XML, Rust or JSON.

use clap::{ArgGroup, Parser};
use std::path::PathBuf;
use std::process::ExitCode;
use telbus_interfaces::{Compiler, json, protocol_id, rust, xml};

/// Compile a TelAF .api file to D-Bus.
///
/// The API becomes the D-Bus interface io.telaf.<api>: FUNCTIONs are methods, EVENTs are
/// Add<Event>Handler/Remove<Event>Handler methods plus a signal, REFERENCEs are object
/// paths, and size limits, TelAF types, DEFINEs and the protocol id are kept as
/// annotations. USETYPES imports are searched next to FILE, then in each -I directory.
#[derive(Parser)]
#[command(
    name = "telbus-ifgen",
    version,
    after_help = "\
Examples:
  telbus-ifgen interfaces/api/le_mcc.api --xml
  telbus-ifgen le_data.api -I interfaces/api --rust > le_data.rs
  telbus-ifgen le_info.api --hash

Errors and warnings are printed as FILE:LINE:COLUMN: error: MESSAGE; the exit status is 1
when the API is invalid, 2 on a usage error."
)]
#[command(group(ArgGroup::new("output").required(true).args(["xml", "rust", "json", "hash"])))]
struct Args {
    /// The .api file to compile
    file: PathBuf,
    /// Add a directory to search for USETYPES imports (repeatable)
    #[arg(short = 'I', long = "include", value_name = "DIR")]
    include: Vec<PathBuf>,
    /// Print the D-Bus introspection XML
    #[arg(long)]
    xml: bool,
    /// Print the Rust module (zbus proxy, server trait and wrapper, types). It refers to
    /// the shared module `super::telaf_common` (see --with-common) and to `super::<import>`
    #[arg(long)]
    rust: bool,
    /// With --rust: print the shared `telaf_common` module first
    #[arg(long, requires = "rust")]
    with_common: bool,
    /// With --rust: print only the types and consts (as for an imported API)
    #[arg(long, requires = "rust")]
    types_only: bool,
    /// Print the API and its D-Bus mapping as JSON
    #[arg(long)]
    json: bool,
    /// Print the protocol id (MD5 of the canonical dump of the API and its imports)
    #[arg(long)]
    hash: bool,
    /// With --hash: also print the canonical dump the id is computed from
    #[arg(short, long, requires = "hash")]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let api = match Compiler::new()
        .include_dirs(args.include.clone())
        .compile_file(&args.file)
    {
        Ok(api) => api,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    for w in &api.warnings {
        eprintln!("{}: warning: {}", w.span, w.message);
    }
    if args.xml {
        print!("{}", xml::generate(&api));
    } else if args.rust {
        let mode = if args.types_only {
            rust::Mode::TypesOnly
        } else {
            rust::Mode::Full
        };
        if args.with_common {
            println!("{}", rust::common());
        }
        print!("{}", rust::generate(&api, mode));
    } else if args.json {
        print!("{}", json::generate(&api));
    } else {
        if args.verbose {
            print!("{}", protocol_id::canonical_dump(&api));
        }
        println!("{}", protocol_id::protocol_id(&api));
    }
    ExitCode::SUCCESS
}
