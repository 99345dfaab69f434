//! Takes a reference and holds it until killed: a le_data request (`data`) or a le_pm wakeup
//! source kept awake (`pm TAG`). Prints the reference once it is held.

use clap::{Parser, Subcommand};
use telbus_examples::api::{le_data::client::LeDataProxy, le_pm::client::LePmProxy};

#[derive(Parser)]
struct Args {
    /// The bus (default: the session bus).
    #[arg(long)]
    address: Option<String>,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Requests the data connection.
    Data,
    /// Creates wakeup source TAG and keeps the system awake with it.
    Pm { tag: String },
}

fn main() -> zbus::Result<()> {
    let args = Args::parse();
    zruntime::block_on(async {
        let conn = telbus_examples::connect(args.address.as_deref()).await?;
        match args.what {
            What::Data => {
                let data = LeDataProxy::builder(&conn)
                    .destination("io.telaf.dataConnectionService.le_data")
                    .build()
                    .await?;
                let request = data.request().await?;
                println!("holding {request}");
            }
            What::Pm { tag } => {
                let pm = LePmProxy::builder(&conn)
                    .destination("io.telaf.powerMgr.le_pm")
                    .build()
                    .await?;
                let source = pm.new_wakeup_source(0, &tag).await?;
                let result = pm.stay_awake(&source).await?;
                println!("holding {source} (StayAwake: {result})");
            }
        }
        // Hold it until killed.
        futures::future::pending::<()>().await;
        Ok(())
    })
}
