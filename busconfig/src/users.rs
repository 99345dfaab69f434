//! Users and groups named in a configuration, resolved the way dbus-daemon resolves them: a
//! number is an id, anything else a name, and either must exist in the user database (NSS).
//!
//! By hand over libc's reentrant getpw*_r/getgr*_r: the crates that wrap them (users, nix)
//! bring much more than these four calls.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;

use crate::limits::parse_c_integer;

/// A number as dbus-daemon reads user and group ids (`strtoul` with base 0, and nothing after).
fn as_number(text: &str) -> Option<u32> {
    let (value, used) = parse_c_integer(text)?;
    if used != text.len() {
        return None;
    }
    u32::try_from(value).ok()
}

/// Call a getpw*_r/getgr*_r style function, growing the buffer while it says ERANGE.
fn with_buffer<T>(
    mut call: impl FnMut(&mut [libc::c_char]) -> Result<Option<T>, i32>,
) -> Option<T> {
    let mut size = 1024;
    loop {
        let mut buffer = vec![0 as libc::c_char; size];
        match call(&mut buffer) {
            Ok(found) => return found,
            Err(libc::ERANGE) if size < 1 << 20 => size *= 4,
            Err(_) => return None,
        }
    }
}

/// A user database entry: what dbus-daemon uses of it.
struct Passwd {
    uid: u32,
    name: String,
    home: String,
}

fn passwd_by_uid(uid: u32) -> Option<Passwd> {
    with_buffer(|buffer| {
        let mut pw = MaybeUninit::<libc::passwd>::uninit();
        let mut result = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; on success `result` points at `pw`,
        // whose strings live in `buffer` and are copied out before it is dropped.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                pw.as_mut_ptr(),
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: see above.
        let (pw, name, home) = unsafe {
            let pw = pw.assume_init();
            (pw, CStr::from_ptr(pw.pw_name), CStr::from_ptr(pw.pw_dir))
        };
        Ok(Some(Passwd {
            uid: pw.pw_uid,
            name: name.to_string_lossy().into_owned(),
            home: home.to_string_lossy().into_owned(),
        }))
    })
}

fn passwd_by_name(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    with_buffer(|buffer| {
        let mut pw = MaybeUninit::<libc::passwd>::uninit();
        let mut result = std::ptr::null_mut();
        // SAFETY: as in passwd_by_uid.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                pw.as_mut_ptr(),
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        // SAFETY: `result` is null or points at the filled `pw`.
        Ok((!result.is_null()).then(|| unsafe { pw.assume_init() }.pw_uid))
    })
}

/// A group's gid and name.
fn group_by_gid(gid: u32) -> Option<(u32, String)> {
    with_buffer(|buffer| {
        let mut gr = MaybeUninit::<libc::group>::uninit();
        let mut result = std::ptr::null_mut();
        // SAFETY: as in passwd_by_uid.
        let rc = unsafe {
            libc::getgrgid_r(
                gid,
                gr.as_mut_ptr(),
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: `result` points at the filled `gr`, whose name is a NUL-terminated string in
        // `buffer`.
        let gr = unsafe { gr.assume_init() };
        let name = unsafe { CStr::from_ptr(gr.gr_name) };
        Ok(Some((gr.gr_gid, name.to_string_lossy().into_owned())))
    })
}

fn group_by_name(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    with_buffer(|buffer| {
        let mut gr = MaybeUninit::<libc::group>::uninit();
        let mut result = std::ptr::null_mut();
        // SAFETY: as in passwd_by_uid.
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                gr.as_mut_ptr(),
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        // SAFETY: `result` is null or points at the filled `gr`.
        Ok((!result.is_null()).then(|| unsafe { gr.assume_init() }.gr_gid))
    })
}

/// The uid of a user named in a configuration (`<policy user>`, `<allow user>`): a name, or a
/// number that is the uid of an existing user. None for users the system does not know, whose
/// rules dbus-daemon ignores. `*` is not a user here.
pub fn lookup_user(text: &str) -> Option<u32> {
    match as_number(text) {
        Some(uid) => passwd_by_uid(uid).map(|p| p.uid),
        None => passwd_by_name(text),
    }
}

/// The gid of a group named in a configuration, as [`lookup_user`] does for users.
pub fn lookup_group(text: &str) -> Option<u32> {
    match as_number(text) {
        Some(gid) => group_by_gid(gid).map(|(gid, _)| gid),
        None => group_by_name(text),
    }
}

/// The name of the user with this uid, if the system knows it.
pub fn user_name(uid: u32) -> Option<String> {
    passwd_by_uid(uid).map(|p| p.name)
}

/// The name of the group with this gid, if the system knows it.
pub fn group_name(gid: u32) -> Option<String> {
    group_by_gid(gid).map(|(_, name)| name)
}

/// The home directory of the user with this uid (dbus-daemon's default XDG_DATA_HOME base).
pub(crate) fn home_dir(uid: u32) -> Option<String> {
    passwd_by_uid(uid).map(|p| p.home)
}
