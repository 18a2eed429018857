//! Path rules: ZooKeeper's `PathUtils.validatePath` and the parent-path helpers of
//! `PrepRequestProcessor` (`validatePathForCreate`, `getParentPathAndValidate`).

use rookery_protocol::ErrorCode;

/// The paths ZooKeeper creates itself and refuses to delete (`DataTree.isSpecialPath`).
pub const SPECIAL_PATHS: [&str; 4] = ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"];

/// ZooKeeper's `PathUtils.validatePath(path, isSequential)`: a sequential create validates
/// `path + "1"`, so `/a/` is a valid sequential prefix. Any violation is `BadArguments`.
pub fn validate_path(path: &str, sequential: bool) -> Result<(), ErrorCode> {
    let ok = if sequential {
        is_valid_path(&format!("{path}1"))
    } else {
        is_valid_path(path)
    };
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::BadArguments)
    }
}

/// `PathUtils.validatePath(path)`, character for character. Java checks UTF-16 code units:
/// a character outside the Basic Multilingual Plane is a surrogate pair, which falls in the
/// forbidden range U+D800..U+F8FF, so every such character is rejected here too.
pub fn is_valid_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    if rest.ends_with('/') {
        return false;
    }
    // `last` is chars[i-1] and `before_last` chars[i-2] in Java's loop.
    let mut before_last = '\0';
    let mut last = '/';
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        let next_is_end_or_slash = chars.peek().is_none_or(|&n| n == '/');
        // Java's else-if chain; '\0', '/' and '.' are outside the forbidden ranges, so the
        // branches can be or-ed. "." and ".." components are relative paths.
        let relative = c == '.'
            && next_is_end_or_slash
            && if last == '.' {
                before_last == '/'
            } else {
                last == '/'
            };
        if c == '\0' || (c == '/' && last == '/') || relative || is_forbidden_char(c) {
            return false;
        }
        before_last = last;
        last = c;
    }
    true
}

/// The character ranges `PathUtils` rejects, plus everything Java would encode as a surrogate.
fn is_forbidden_char(c: char) -> bool {
    let c = u32::from(c);
    (0x01..=0x1f).contains(&c)
        || (0x7f..=0x9f).contains(&c)
        || (0xd800..=0xf8ff).contains(&c)
        || (0xfff0..=0xffff).contains(&c)
        || c > 0xffff
}

/// `PrepRequestProcessor.validatePathForCreate`: only a missing '/' or a NUL is rejected here;
/// the full check comes later, after the parent and ACL checks (ZooKeeper's order).
pub(crate) fn parent_for_create(path: &str) -> Result<&str, ErrorCode> {
    match path.rfind('/') {
        Some(slash) if !path.contains('\0') => Ok(&path[..slash]),
        _ => Err(ErrorCode::BadArguments),
    }
}

/// `PrepRequestProcessor.getParentPathAndValidate` (delete, deleteContainer): also refuses
/// the special paths.
pub(crate) fn parent_for_delete(path: &str) -> Result<&str, ErrorCode> {
    if SPECIAL_PATHS.contains(&path) {
        return Err(ErrorCode::BadArguments);
    }
    parent_for_create(path)
}

/// The path a ChildrenChanged trigger names: ZooKeeper maps the root's alias "" to "/".
pub(crate) fn display_parent(parent: &str) -> &str {
    if parent.is_empty() {
        "/"
    } else {
        parent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `PathUtils.validatePath`, transliterated over UTF-16 code units.
    #[allow(clippy::if_same_then_else)]
    fn java_model(path: &str) -> bool {
        let chars: Vec<u16> = path.encode_utf16().collect();
        let slash = u16::from(b'/');
        let dot = u16::from(b'.');
        if chars.is_empty() || chars[0] != slash {
            return false;
        }
        if chars.len() == 1 {
            return true;
        }
        if chars[chars.len() - 1] == slash {
            return false;
        }
        let mut lastc = slash;
        let mut i = 1;
        while i < chars.len() {
            let c = chars[i];
            if c == 0 {
                return false;
            } else if c == slash && lastc == slash {
                return false;
            } else if c == dot && lastc == dot {
                if chars[i - 2] == slash && (i + 1 == chars.len() || chars[i + 1] == slash) {
                    return false;
                }
            } else if c == dot {
                if chars[i - 1] == slash && (i + 1 == chars.len() || chars[i + 1] == slash) {
                    return false;
                }
            } else if (c > 0 && c <= 0x1f)
                || (0x7f..=0x9f).contains(&c)
                || (0xd800..=0xf8ff).contains(&c)
                || (0xfff0..=0xffff).contains(&c)
            {
                return false;
            }
            lastc = chars[i];
            i += 1;
        }
        true
    }

    proptest! {
        #[test]
        fn matches_java(path in proptest::collection::vec(prop::sample::select(vec![
            '/', '/', '/', '.', '.', 'a', 'b', '\0', '\u{1}', '\u{7f}', '\u{a0}', '\u{e000}',
            '\u{f900}', '\u{fff5}', '\u{1f600}', '\u{e9}',
        ]), 0..8).prop_map(|v| v.into_iter().collect::<String>())) {
            prop_assert_eq!(is_valid_path(&path), java_model(&path), "{:?}", path);
        }
    }

    #[test]
    fn valid_paths() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/a.b",
            "/...",
            "/a/..b",
            "/a/b..",
            "/zookeeper",
            "/é",
            "/\u{fff}",
        ] {
            assert!(is_valid_path(p), "{p:?} should be valid");
        }
    }

    #[test]
    fn invalid_paths() {
        for p in [
            "",
            "a",
            "a/b",
            "/a/",
            "//",
            "//a",
            "/a//b",
            "/.",
            "/..",
            "/a/.",
            "/a/./b",
            "/a/../b",
            "/a\0b",
            "/a\u{1}",
            "/a\u{1f}",
            "/a\u{7f}",
            "/a\u{9f}",
            "/a\u{e000}",
            "/a\u{f8ff}",
            "/a\u{fff0}",
            "/a\u{ffff}",
            "/a\u{1f600}",
        ] {
            assert!(!is_valid_path(p), "{p:?} should be invalid");
        }
    }

    #[test]
    fn sequential_validation_appends_one() {
        assert_eq!(validate_path("/a/", true), Ok(()));
        assert_eq!(validate_path("/a/", false), Err(ErrorCode::BadArguments));
        assert_eq!(validate_path("/", true), Ok(()));
        assert_eq!(validate_path("/a/.", true), Ok(()));
        assert_eq!(validate_path("", true), Err(ErrorCode::BadArguments));
    }

    #[test]
    fn parents() {
        assert_eq!(parent_for_create("/a"), Ok(""));
        assert_eq!(parent_for_create("/a/b"), Ok("/a"));
        assert_eq!(parent_for_create("/a/"), Ok("/a"));
        assert_eq!(parent_for_create("a"), Err(ErrorCode::BadArguments));
        assert_eq!(parent_for_create("/a\0"), Err(ErrorCode::BadArguments));
        for special in SPECIAL_PATHS {
            assert_eq!(parent_for_delete(special), Err(ErrorCode::BadArguments));
        }
        assert_eq!(parent_for_delete("/zookeeper/x"), Ok("/zookeeper"));
        assert_eq!(parent_for_delete(""), Err(ErrorCode::BadArguments));
    }
}
