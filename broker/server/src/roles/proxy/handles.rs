//! Handles the proxy hands out: every receipt handle, transaction id and recall handle a group
//! issued is prefixed with `fm:<group>:`, so any proxy can route its use back to that group.

use ferromq_proto::v2::{self, Code};
use tonic::metadata::MetadataMap;

use super::fanout::fail;
use super::routes::GroupRoute;
use super::ProxyApi;

/// Prefix of every handle the proxy hands out: `fm:<group>:<the group's own handle>`.
const HANDLE_PREFIX: &str = "fm:";

/// Wraps a group's handle so that any proxy can route it back to the group.
pub fn wrap_handle(group: &str, handle: &str) -> String {
    if handle.is_empty() {
        return String::new();
    }
    // Built by hand: one per settled message, and `format!`'s machinery showed in the proxy's
    // profile.
    let mut wrapped = String::with_capacity(wrap_prefix_len(group) + handle.len());
    wrapped.push_str(HANDLE_PREFIX);
    wrapped.push_str(group);
    wrapped.push(':');
    wrapped.push_str(handle);
    wrapped
}

/// How many bytes [`wrap_handle`] puts before a non-empty handle.
pub fn wrap_prefix_len(group: &str) -> usize {
    HANDLE_PREFIX.len() + group.len() + 1
}

/// Writes what [`wrap_handle`] puts before a non-empty handle, for a writer that copies the
/// handle itself (the raw receive's encoder, [`super::raw_receive`]).
pub fn put_wrap_prefix(group: &str, out: &mut impl bytes::BufMut) {
    out.put_slice(HANDLE_PREFIX.as_bytes());
    out.put_slice(group.as_bytes());
    out.put_u8(b':');
}

/// Splits a wrapped handle into (group, the group's handle).
pub fn unwrap_handle(h: &str) -> Option<(&str, &str)> {
    let rest = h.strip_prefix(HANDLE_PREFIX)?;
    let (group, handle) = rest.split_once(':')?;
    if group.is_empty() || handle.is_empty() {
        return None;
    }
    Some((group, handle))
}

impl ProxyApi {
    /// The live group a wrapped handle names and the group's own handle. A foreign handle, or
    /// one whose group is gone, is answered with `code`.
    pub(super) fn resolve_handle(
        &self,
        md: &MetadataMap,
        wrapped: &str,
        what: &str,
        code: Code,
    ) -> Result<(GroupRoute, String), v2::Status> {
        let (group, handle) = unwrap_handle(wrapped).ok_or_else(|| {
            fail(
                md,
                code,
                format!("{what} was not issued by a FerroMQ proxy"),
            )
        })?;
        let g = self.group_named(group).ok_or_else(|| {
            fail(
                md,
                code,
                format!("broker group {group} of this {what} is not alive"),
            )
        })?;
        Ok((g, handle.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_foreign_ones_are_refused() {
        let w = wrap_handle("group-a", "abc:def");
        assert_eq!(unwrap_handle(&w), Some(("group-a", "abc:def")));
        assert_eq!(wrap_handle("g", ""), "");
        assert_eq!(unwrap_handle("abc"), None);
        assert_eq!(unwrap_handle("fm::x"), None);
        assert_eq!(unwrap_handle("fm:g:"), None);
        let mut prefix = Vec::new();
        put_wrap_prefix("group-a", &mut prefix);
        assert_eq!(prefix.len(), wrap_prefix_len("group-a"));
        assert_eq!(w.as_bytes(), [&prefix[..], b"abc:def"].concat());
    }
}
