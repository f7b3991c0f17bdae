//! The static token file (upstream's `--token-auth-file`): CSV lines `token,user,uid,"g1,g2"`.
//! The uid and groups columns are optional; blank lines and `#` comments are skipped.

use std::collections::HashMap;

use super::AuthnError;
use crate::auth::UserInfo;

/// Parses a token file's contents into token → user (every user gets `system:authenticated`).
/// A malformed line is an error naming its (1-based) line number; a repeated token keeps the
/// last line, as upstream does.
pub fn parse(text: &str) -> Result<HashMap<String, UserInfo>, AuthnError> {
    let mut tokens = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let bad = |why: &str| AuthnError::TokenFile(format!("line {n}: {why}"));
        let fields = split_csv(trimmed).map_err(bad)?;
        if fields.len() < 2 {
            return Err(bad(
                "must have at least 2 columns (token, user name[, uid, \"groups\"])",
            ));
        }
        let token = fields[0].trim();
        let name = fields[1].trim();
        if token.is_empty() {
            return Err(bad("empty token"));
        }
        if name.is_empty() {
            return Err(bad("empty user name"));
        }
        let mut user = UserInfo {
            name: name.to_string(),
            uid: fields
                .get(2)
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            ..Default::default()
        };
        if let Some(groups) = fields.get(3) {
            user.groups = groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect();
        }
        user.ensure_authenticated();
        tokens.insert(token.to_string(), user);
    }
    Ok(tokens)
}

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote inside quotes).
fn split_csv(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut at_field_start = true;
    loop {
        if at_field_start && chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    Some('"') => break,
                    Some(c) => cur.push(c),
                    None => return Err("unterminated quoted field"),
                }
            }
            match chars.next() {
                None => {
                    fields.push(std::mem::take(&mut cur));
                    return Ok(fields);
                }
                Some(',') => {
                    fields.push(std::mem::take(&mut cur));
                    at_field_start = true;
                    continue;
                }
                Some(_) => return Err("extraneous text after a quoted field"),
            }
        }
        at_field_start = false;
        match chars.next() {
            None => {
                fields.push(cur);
                return Ok(fields);
            }
            Some(',') => {
                fields.push(std::mem::take(&mut cur));
                at_field_start = true;
            }
            Some('"') => return Err("bare quote in an unquoted field"),
            Some(c) => cur.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::user::AUTHENTICATED;

    #[test]
    fn parses_quoted_groups_and_optional_columns() {
        let text = "# comment\n\n\
                    t1,alice,u1,\"dev,ops\"\n\
                    t2,bob\n\
                    t3,carol,u3\n\
                    t4,dave,,system:masters\n\
                    \"t,5\",\"e\"\"ve\",u5,\"\"\n";
        let m = parse(text).unwrap();
        let a = &m["t1"];
        assert_eq!(a.name, "alice");
        assert_eq!(a.uid, "u1");
        assert_eq!(a.groups, vec!["dev", "ops", AUTHENTICATED]);
        assert_eq!(m["t2"].groups, vec![AUTHENTICATED]);
        assert_eq!(m["t2"].uid, "");
        assert_eq!(m["t3"].uid, "u3");
        assert_eq!(m["t4"].groups, vec!["system:masters", AUTHENTICATED]);
        assert_eq!(m["t,5"].name, "e\"ve");
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (text, line) in [
            ("ok,u\nonlytoken\n", 2),
            ("# c\n\n,user\n", 3),
            ("t,\n", 1),
            ("t,u,x,\"a,b\n", 1),
            ("t,u,x,\"a\"b\n", 1),
            ("t,u\"x\n", 1),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(&format!("line {line}:")), "{text:?}: {e}");
        }
    }
}
