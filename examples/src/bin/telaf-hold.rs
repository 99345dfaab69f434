//! Takes a reference and holds it until killed: a le_data request (`data`), a le_pm wakeup
//! source kept awake (`pm TAG`) or a GPIO pin configured as an output (`gpio N`). Prints what
//! it holds once it is held.

use clap::{Parser, Subcommand};
use telbus_examples::api::le_gpio::{self, client::LeGpioProxy};
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
    /// Configures GPIO pin N (io.telaf.gpioService.le_gpioPinN) as an output, which makes it
    /// this client's until it leaves the bus.
    Gpio { pin: u32 },
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
            What::Gpio { pin } => {
                let gpio = LeGpioProxy::builder(&conn)
                    .destination(format!("io.telaf.gpioService.le_gpioPin{pin}"))
                    .path(format!("/io/telaf/le_gpioPin{pin}"))
                    .build()
                    .await?;
                let high = le_gpio::Polarity::ACTIVE_HIGH.to_wire();
                let result = gpio.set_push_pull_output(high, false).await?;
                println!("holding pin {pin} (SetPushPullOutput: {result})");
            }
        }
        // Hold it until killed.
        futures::future::pending::<()>().await;
        Ok(())
    })
}
