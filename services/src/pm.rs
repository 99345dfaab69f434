//! `le_pm`: wakeup sources that keep the (simulated) system awake.
//!
//! `NewWakeupSource` returns a source of the caller's own; `StayAwake` holds it (counted when
//! created with REF_COUNT), `Relax` lets go. The system stays awake while any source is held.
//! A client that leaves the bus — even killed — loses its sources, and the system may sleep.
//! `io.telaf.sim.le_pm` shows the state: properties `Awake` and `WakeupSources`, with
//! PropertiesChanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::info;
use zbus::wire::OwnedObjectPath;
use zbus::{Connection, fdo};

use crate::api::le_pm::server::{LePm, LePmServer};
use crate::api::le_pm::{self, REF_COUNT};
use crate::api::telaf_common::{Context, LeResult};
use crate::paths::PathMinter;
use crate::references::{Departure, References};
use crate::startup::{Service, Startup};

/// The app that provides le_pm by default.
pub const APP: &str = "powerMgr";
/// The service name (and API).
pub const SERVICE: &str = "le_pm";
/// Shows the simulated power state.
pub const SIM_INTERFACE: &str = "io.telaf.sim.le_pm";

const WAKEUP_SOURCE: &str = "le_pm.WakeupSource";

#[derive(Debug, Clone)]
struct Source {
    holder: String,
    tag: String,
    counted: bool,
    /// How many StayAwake calls are not relaxed yet (at most 1 unless counted).
    holds: u32,
}

/// The le_pm service.
pub struct Power {
    /// path → source
    sources: Mutex<BTreeMap<String, Source>>,
    references: References,
    minter: PathMinter,
    connection: Connection,
    root: OwnedObjectPath,
}

impl Power {
    fn awake(&self) -> bool {
        self.sources.lock().unwrap().values().any(|s| s.holds > 0)
    }

    /// Tells watchers of `io.telaf.sim.le_pm` what changed, and logs the power state.
    async fn announce(&self, was_awake: bool) {
        let awake = self.awake();
        if awake != was_awake {
            info!(
                awake,
                "system {}",
                if awake { "kept awake" } else { "may sleep" }
            );
        }
        let server = self.connection.object_server();
        if let Ok(sim) = server.interface::<_, Sim>(&self.root).await {
            let emitter = sim.signal_emitter();
            let sim = sim.get().await;
            let _ = sim.wakeup_sources_changed(emitter).await;
            if awake != was_awake {
                let _ = sim.awake_changed(emitter).await;
            }
        }
    }

    /// Changes the caller's source `path` with `change`; NotFound when it is not the caller's.
    async fn with_source(
        &self,
        ctx: &Context,
        path: &OwnedObjectPath,
        change: impl FnOnce(&mut Source) -> LeResult,
    ) -> LeResult {
        let was_awake = self.awake();
        let result = {
            let mut sources = self.sources.lock().unwrap();
            match sources.get_mut(path.as_str()) {
                Some(source) if source.holder == ctx.sender.as_str() => change(source),
                _ => return LeResult::NotFound,
            }
        };
        self.announce(was_awake).await;
        result
    }
}

impl Service for Power {
    async fn client_gone(&self, departure: Departure) {
        let was_awake = self.awake();
        {
            let mut sources = self.sources.lock().unwrap();
            for path in departure.of_kind(WAKEUP_SOURCE) {
                if let Some(source) = sources.remove(path.as_str()) {
                    info!(
                        tag = source.tag,
                        holds = source.holds,
                        "wakeup source released"
                    );
                }
            }
        }
        self.announce(was_awake).await;
    }
}

impl LePm for Arc<Power> {
    async fn new_wakeup_source(
        &self,
        ctx: Context,
        create_opts: u32,
        ws_tag: String,
    ) -> fdo::Result<OwnedObjectPath> {
        if create_opts & !(REF_COUNT as u32) != 0 {
            return Err(fdo::Error::InvalidArgs(format!(
                "argument 'createOpts': {create_opts} is not 0 or REF_COUNT ({REF_COUNT})"
            )));
        }
        if ws_tag.is_empty() {
            return Err(fdo::Error::InvalidArgs(
                "argument 'wsTag': a wakeup source needs a tag".into(),
            ));
        }
        let path = self.minter.mint("wakeup");
        self.sources.lock().unwrap().insert(
            path.as_str().to_string(),
            Source {
                holder: ctx.sender.to_string(),
                tag: ws_tag,
                counted: create_opts & REF_COUNT as u32 != 0,
                holds: 0,
            },
        );
        self.references
            .register(&ctx.sender, &path, WAKEUP_SOURCE, false)
            .await;
        self.announce(self.awake()).await;
        Ok(path)
    }

    async fn stay_awake(&self, ctx: Context, ws_ref: OwnedObjectPath) -> fdo::Result<LeResult> {
        Ok(self
            .with_source(&ctx, &ws_ref, |source| {
                if source.counted {
                    source.holds += 1;
                } else {
                    source.holds = 1;
                }
                LeResult::Ok
            })
            .await)
    }

    async fn relax(&self, ctx: Context, ws_ref: OwnedObjectPath) -> fdo::Result<LeResult> {
        Ok(self
            .with_source(&ctx, &ws_ref, |source| {
                if source.holds == 0 {
                    return LeResult::NotPermitted;
                }
                source.holds -= 1;
                LeResult::Ok
            })
            .await)
    }

    async fn force_relax_and_destroy_all_wakeup_source(&self, _: Context) -> fdo::Result<LeResult> {
        let was_awake = self.awake();
        let all = std::mem::take(&mut *self.sources.lock().unwrap());
        for path in all.keys() {
            if let Ok(path) = OwnedObjectPath::try_from(path.as_str()) {
                self.references.release(&path).await;
            }
        }
        self.announce(was_awake).await;
        Ok(LeResult::Ok)
    }
}

/// The simulated power state, for demos and tests.
pub struct Sim {
    power: Arc<Power>,
}

#[zbus::interface(name = "io.telaf.sim.le_pm")]
impl Sim {
    /// Whether some wakeup source is held.
    #[zbus(property)]
    fn awake(&self) -> bool {
        self.power.awake()
    }

    /// Every wakeup source: (path, tag, holder's unique name, holds).
    #[zbus(property)]
    fn wakeup_sources(&self) -> Vec<(OwnedObjectPath, String, String, u32)> {
        let sources = self.power.sources.lock().unwrap();
        sources
            .iter()
            .filter_map(|(path, s)| {
                let path = OwnedObjectPath::try_from(path.as_str()).ok()?;
                Some((path, s.tag.clone(), s.holder.clone(), s.holds))
            })
            .collect()
    }
}

/// Serves le_pm (and its simulation interface) at `startup.root`.
pub async fn serve(startup: Startup) -> zbus::Result<Arc<Power>> {
    let power = Arc::new(Power {
        sources: Mutex::new(BTreeMap::new()),
        references: startup.references.clone(),
        minter: PathMinter::new(startup.root.as_str()),
        connection: startup.connection.clone(),
        root: startup.root.clone(),
    });
    let server = startup.connection.object_server();
    server
        .at(&startup.root, LePmServer::new(power.clone()))
        .await?;
    server.at(&startup.root, le_pm::service1()).await?;
    server
        .at(
            &startup.root,
            Sim {
                power: power.clone(),
            },
        )
        .await?;
    Ok(power)
}
