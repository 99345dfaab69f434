//! Plain aligned text tables and small formatting helpers. Hand-written: telbusctl only needs
//! left-aligned columns separated by two spaces (like `ps` or `busctl list`), which is less
//! code than adapting a table crate's borders and styles away.

pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.into());
    }

    pub fn render(&self) -> String {
        self.render_rows(std::iter::once(&self.header).chain(&self.rows))
    }

    /// Key-value tables read better without a header line.
    pub fn render_without_header(&self) -> String {
        self.render_rows(self.rows.iter())
    }

    fn render_rows<'a>(&self, rows: impl Iterator<Item = &'a Vec<String>> + Clone) -> String {
        let mut widths = vec![0; self.header.len()];
        for row in rows.clone() {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in rows {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.pop();
        out
    }
}

/// "2d 3h 4m 5s", leaving out leading zero units.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// The user name of a uid, from the user database.
pub fn user_name(uid: u32) -> Option<String> {
    // getpwuid_r: the reentrant form, into a buffer we own.
    let mut buf = vec![0u8; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are to live storage of the sizes given.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points into `buf`, NUL-terminated.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(["wide cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide cell  x");
    }

    #[test]
    fn durations_drop_leading_zero_units() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(3661), "1h 1m 1s");
        assert_eq!(duration(90061), "1d 1h 1m 1s");
    }
}
