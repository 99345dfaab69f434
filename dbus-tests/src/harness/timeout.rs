//! Running async test code with a time limit on every wait, so that a hang fails the test.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use futures::StreamExt;
use zbus::message::Type;
use zbus::{Message, MessageStream};
use zruntime::SharedRuntime;

/// The longest a whole async test may take.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest one step (a call, a signal awaited) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs an async test to completion on this thread, failing it after [`TEST_TIMEOUT`].
///
/// zruntime's own `block_on` rather than `zbus::block_on`: it is the same runtime, but stays so
/// even if another crate in the build turns zbus's `tokio` feature on.
#[track_caller]
pub fn run<F: Future>(test: F) -> F::Output {
    zruntime::block_on(async {
        match runtime().timeout(TEST_TIMEOUT, test).await {
            Ok(output) => output,
            Err(_) => panic!("test still running after {TEST_TIMEOUT:?}"),
        }
    })
}

/// Awaits `future`, panicking with `what` if it takes longer than `limit`.
pub async fn within<F: IntoFuture>(limit: Duration, what: &str, future: F) -> F::Output {
    match runtime().timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// The next signal on `stream` for which `wanted` holds, skipping every other message.
/// Panics after [`STEP_TIMEOUT`] or if the stream ends.
pub async fn next_signal(stream: &mut MessageStream, wanted: impl Fn(&Message) -> bool) -> Message {
    within(STEP_TIMEOUT, "waiting for a signal", async {
        loop {
            let message = stream
                .next()
                .await
                .expect("message stream ended")
                .expect("message stream error");
            if message.message_type() == Type::Signal && wanted(&message) {
                return message;
            }
        }
    })
    .await
}

fn runtime() -> SharedRuntime {
    SharedRuntime::current().expect("not inside telbus_dbus_tests::run")
}
