//! Makes a voice call through le_mcc and prints its events, then exits — without HangUp or
//! Delete: the service ends the call and releases the references when this client is gone.

use clap::Parser;
use futures::StreamExt;
use telbus_examples::api::le_mcc::{self, Event, client::LeMccProxy};

/// Calls NUMBER through io.telaf.modemService.le_mcc and prints each call event.
#[derive(Parser)]
struct Args {
    /// The bus (default: the session bus).
    #[arg(long)]
    address: Option<String>,
    /// Seconds to stay on the line once connected before exiting.
    #[arg(long, default_value_t = 0)]
    talk: u64,
    number: String,
}

fn main() -> zbus::Result<()> {
    let args = Args::parse();
    zruntime::block_on(async {
        let conn = telbus_examples::connect(args.address.as_deref()).await?;
        let mcc = LeMccProxy::builder(&conn)
            .destination("io.telaf.modemService.le_mcc")
            .path("/io/telaf/le_mcc")
            .build()
            .await?;

        // Events come on the handler's own path, to this client only.
        let handler = mcc.add_call_event_handler().await?;
        let events_proxy = LeMccProxy::builder(&conn)
            .destination("io.telaf.modemService.le_mcc")
            .path(handler)
            .build()
            .await?;
        let mut events = events_proxy.receive_call_event().await?;

        let call = mcc.create(&args.number).await?;
        println!("call {call} to {}", args.number);
        let started = mcc.start(&call).await?;
        if started != 0 {
            println!("Start failed: {started}");
            return Ok(());
        }
        while let Some(signal) = events.next().await {
            let args_ = signal.args()?;
            let event = Event::try_from(*args_.event())
                .map_err(|v| zbus::Error::Failure(format!("unknown event {v}")))?;
            println!("{} {}", args_.call_ref(), event.name());
            match event {
                Event::EVENT_CONNECTED => {
                    let timer = zruntime::SharedRuntime::current()?;
                    timer.sleep(std::time::Duration::from_secs(args.talk)).await;
                    break;
                }
                Event::EVENT_TERMINATED => {
                    let reason = mcc.get_termination_reason(args_.call_ref()).await?;
                    let reason = le_mcc::TerminationReason::try_from(reason)
                        .map(|r| r.name())
                        .unwrap_or("?");
                    println!("ended: {reason}");
                    break;
                }
                _ => {}
            }
        }
        // No HangUp, no Delete: leaving is enough.
        Ok(())
    })
}
