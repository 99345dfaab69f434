//! `le_info`: the device's identity — IMEI, firmware, model, reset information, RF devices —
//! from a simulated module. CDMA-only items answer LE_FAULT, as on a GSM/LTE module.

use std::sync::Arc;

use zbus::fdo;

use crate::api::le_info::{self, Reset, server::LeInfo};
use crate::api::telaf_common::{Context, LeResult};
use crate::references::Departure;
use crate::startup::Service;

/// The app that provides le_info by default.
pub const APP: &str = "infoService";
/// The service name (and API).
pub const SERVICE: &str = "le_info";

/// What the simulated module reports.
#[derive(Debug, Clone)]
pub struct Identity {
    pub imei: String,
    pub imei_sv: String,
    pub firmware: String,
    pub bootloader: String,
    pub tee: String,
    pub model: String,
    pub manufacturer: String,
    pub reset: (Reset, String),
    /// (manufacturer id, product id, working)
    pub rf_devices: Vec<(u16, u8, bool)>,
    pub pri_id: (String, String),
    pub carrier_pri: (String, String),
    pub serial_number: String,
    pub sku: String,
    pub expected_resets: u64,
    pub unexpected_resets: u64,
    pub product_name: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            imei: "490154203237518".into(),
            imei_sv: "4901542032375101".into(),
            firmware: "SWI9X06Y_02.36.06.00 (simulated)".into(),
            bootloader: "SWI9X06Y_02.36.06.00 boot".into(),
            tee: "none".into(),
            model: "WP7702".into(),
            manufacturer: "telbus simulated modem".into(),
            reset: (Reset::RESET_USER, "reboot requested by an app".into()),
            rf_devices: vec![
                (0x0134, 0x21, true),
                (0x0217, 0x5a, true),
                (0x00c0, 0x07, false),
            ],
            pri_id: ("9907762".into(), "001.002".into()),
            carrier_pri: ("GENERIC".into(), "002.032_000".into()),
            serial_number: "VU929470101010".into(),
            sku: "1104405".into(),
            expected_resets: 3,
            unexpected_resets: 0,
            product_name: "telbus simulated module".into(),
        }
    }
}

/// The le_info service.
pub struct Info {
    identity: Identity,
}

impl Info {
    pub fn new(identity: Identity) -> Arc<Self> {
        Arc::new(Info { identity })
    }
}

impl Service for Info {
    async fn client_gone(&self, _departure: Departure) {
        // le_info hands out no references.
    }
}

fn ok(text: &str) -> fdo::Result<(LeResult, String)> {
    Ok((LeResult::Ok, text.to_string()))
}

/// CDMA-only items: not available on this module.
fn cdma_only() -> fdo::Result<(LeResult, String)> {
    Ok((LeResult::Fault, String::new()))
}

impl LeInfo for Arc<Info> {
    async fn get_imei(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.imei)
    }
    async fn get_imei_sv(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.imei_sv)
    }
    async fn get_firmware_version(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.firmware)
    }
    async fn get_tee_version(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.tee)
    }
    async fn get_reset_information(&self, _: Context) -> fdo::Result<(LeResult, Reset, String)> {
        let (reset, text) = &self.identity.reset;
        Ok((LeResult::Ok, *reset, text.clone()))
    }
    async fn get_bootloader_version(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.bootloader)
    }
    async fn get_device_model(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.model)
    }
    async fn get_meid(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        cdma_only()
    }
    async fn get_esn(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        cdma_only()
    }
    async fn get_mdn(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        cdma_only()
    }
    async fn get_prl_version(&self, _: Context) -> fdo::Result<(LeResult, u16)> {
        Ok((LeResult::Fault, 0))
    }
    async fn get_prl_only_preference(&self, _: Context) -> fdo::Result<(LeResult, bool)> {
        Ok((LeResult::Fault, false))
    }
    async fn get_min(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        cdma_only()
    }
    async fn get_nai(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        cdma_only()
    }
    async fn get_manufacturer_name(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.manufacturer)
    }
    async fn get_pri_id(&self, _: Context) -> fdo::Result<(LeResult, String, String)> {
        let (pn, rev) = &self.identity.pri_id;
        Ok((LeResult::Ok, pn.clone(), rev.clone()))
    }
    async fn get_carrier_pri(&self, _: Context) -> fdo::Result<(LeResult, String, String)> {
        let (name, rev) = &self.identity.carrier_pri;
        Ok((LeResult::Ok, name.clone(), rev.clone()))
    }
    async fn get_platform_serial_number(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.serial_number)
    }
    async fn get_rf_device_status(
        &self,
        _: Context,
    ) -> fdo::Result<(LeResult, Vec<u16>, Vec<u8>, Vec<bool>)> {
        let devices = &self.identity.rf_devices;
        Ok((
            LeResult::Ok,
            devices.iter().map(|d| d.0).collect(),
            devices.iter().map(|d| d.1).collect(),
            devices.iter().map(|d| d.2).collect(),
        ))
    }
    async fn get_sku(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.sku)
    }
    async fn get_expected_resets_count(&self, _: Context) -> fdo::Result<(LeResult, u64)> {
        Ok((LeResult::Ok, self.identity.expected_resets))
    }
    async fn get_unexpected_resets_count(&self, _: Context) -> fdo::Result<(LeResult, u64)> {
        Ok((LeResult::Ok, self.identity.unexpected_resets))
    }
    async fn get_build_time(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(concat!("telbus-services ", env!("CARGO_PKG_VERSION")))
    }
    async fn get_product_name(&self, _: Context) -> fdo::Result<(LeResult, String)> {
        ok(&self.identity.product_name)
    }
}

/// Serves le_info at `startup.root`.
pub async fn serve(
    startup: crate::startup::Startup,
    identity: Identity,
) -> zbus::Result<Arc<Info>> {
    let info = Info::new(identity);
    let server = startup.connection.object_server();
    server
        .at(
            &startup.root,
            le_info::server::LeInfoServer::new(info.clone()),
        )
        .await?;
    server.at(&startup.root, le_info::service1()).await?;
    Ok(info)
}
