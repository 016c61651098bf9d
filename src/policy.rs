//! Who may do what: Cinder's policy rules with its new defaults enforced (admin, project member
//! for writes, project reader for reads), in oslo.policy's check language so that the
//! `policy.yaml` overrides operators already write for Cinder work here unchanged.
//!
//! Cinder still ships `enforce_new_defaults=False`, which ORs each rule with its deprecated
//! default (so a Cinder reader can create volumes); Basalt enforces the new defaults only. System
//! scope is carried but, as in Cinder, no default uses it: a system-scoped admin passes
//! `role:admin`, a system-scoped reader fails every project rule.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, LazyLock},
};

use crate::{ServiceError, error::ErrorCode};

/// Every rule Basalt checks, with its default, as Cinder names them. The first six are the bases
/// the others refer to. Rules marked Basalt's have no Cinder counterpart (Cinder checks nothing
/// there beyond project scoping); their defaults keep the reader/member split.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("context_is_admin", "role:admin"),
    ("admin_api", "is_admin:True or (role:admin and is_admin_project:True)"),
    ("project_member", "role:member and project_id:%(project_id)s"),
    ("project_reader", "role:reader and project_id:%(project_id)s"),
    ("project_member_or_admin", "rule:project_member or rule:context_is_admin"),
    ("project_reader_or_admin", "rule:project_reader or rule:context_is_admin"),
    // Volumes.
    ("volume:create", "rule:project_member_or_admin"),
    ("volume:get", "rule:project_reader_or_admin"),
    ("volume:get_all", "rule:project_reader_or_admin"),
    ("volume:update", "rule:project_member_or_admin"),
    ("volume:delete", "rule:project_member_or_admin"),
    ("volume:force_delete", "rule:admin_api"),
    ("volume:extend", "rule:project_member_or_admin"),
    ("volume:extend_attached_volume", "rule:project_member_or_admin"),
    ("volume:revert_to_snapshot", "rule:project_member_or_admin"),
    ("volume:retype", "rule:project_member_or_admin"),
    ("volume:reserve_volume", "rule:project_member_or_admin"),
    ("volume:unreserve_volume", "rule:project_member_or_admin"),
    ("volume:begin_detaching", "rule:project_member_or_admin"),
    ("volume:roll_detaching", "rule:project_member_or_admin"),
    ("volume:initialize_connection", "rule:project_member_or_admin"),
    ("volume:terminate_connection", "rule:project_member_or_admin"),
    ("volume:attach", "rule:project_member_or_admin"),
    ("volume:detach", "rule:project_member_or_admin"),
    ("volume_extension:volume_admin_actions:reset_status", "rule:admin_api"),
    ("volume_extension:volume_admin_actions:migrate_volume", "rule:admin_api"),
    // Snapshots.
    ("volume:create_snapshot", "rule:project_member_or_admin"),
    ("volume:get_snapshot", "rule:project_reader_or_admin"),
    ("volume:get_all_snapshots", "rule:project_reader_or_admin"),
    ("volume:update_snapshot", "rule:project_member_or_admin"),
    ("volume:delete_snapshot", "rule:project_member_or_admin"),
    ("volume_extension:snapshot_admin_actions:reset_status", "rule:admin_api"),
    ("volume_extension:snapshot_admin_actions:force_delete", "rule:admin_api"),
    // Volume transfers.
    ("volume:create_transfer", "rule:project_member_or_admin"),
    ("volume:get_transfer", "rule:project_reader_or_admin"),
    ("volume:get_all_transfers", "rule:project_reader_or_admin"),
    ("volume:accept_transfer", "rule:project_member_or_admin"),
    ("volume:delete_transfer", "rule:project_member_or_admin"),
    // Group types (admin for changes) and groups (3.11+).
    ("group:group_types_manage", "rule:admin_api"),
    ("group:group_types_specs", "rule:admin_api"),
    ("group:access_group_types_specs", "rule:admin_api"),
    ("group:group_types:get", "rule:project_reader_or_admin"),
    ("group:group_types:get_all", "rule:project_reader_or_admin"),
    ("group:create", "rule:project_member_or_admin"),
    ("group:get", "rule:project_reader_or_admin"),
    ("group:get_all", "rule:project_reader_or_admin"),
    ("group:update", "rule:project_member_or_admin"),
    ("group:delete", "rule:project_member_or_admin"),
    ("group:reset_status", "rule:admin_api"),
    ("group:create_group_snapshot", "rule:project_member_or_admin"),
    ("group:get_group_snapshot", "rule:project_reader_or_admin"),
    ("group:get_all_group_snapshots", "rule:project_reader_or_admin"),
    ("group:delete_group_snapshot", "rule:project_member_or_admin"),
    ("group:reset_group_snapshot_status", "rule:admin_api"),
    // Basalt's: recovering from a volume node that is gone.
    ("basalt:node_recovery", "rule:admin_api"),
    // Basalt's: reading the operation journal.
    ("basalt:journal:index", "rule:admin_api"),
    // Manage and unmanage.
    ("volume_extension:volume_manage", "rule:admin_api"),
    ("volume_extension:volume_unmanage", "rule:admin_api"),
    ("volume_extension:list_manageable", "rule:admin_api"),
    ("snapshot_extension:snapshot_manage", "rule:admin_api"),
    ("snapshot_extension:snapshot_unmanage", "rule:admin_api"),
    ("snapshot_extension:list_manageable", "rule:admin_api"),
    // User messages (3.3+).
    ("message:get_all", "rule:project_reader_or_admin"),
    ("message:get", "rule:project_reader_or_admin"),
    ("message:delete", "rule:project_member_or_admin"),
    // Attachments (3.27+).
    ("volume:attachment_create", "rule:project_member_or_admin"),
    ("volume:attachment_update", "rule:project_member_or_admin"),
    ("volume:attachment_complete", "rule:project_member_or_admin"),
    ("volume:attachment_delete", "rule:project_member_or_admin"),
    // Basalt's: reading attachments.
    ("volume:attachment_get", "rule:project_reader_or_admin"),
    ("volume:attachment_get_all", "rule:project_reader_or_admin"),
    // Backups.
    ("backup:create", "rule:project_member_or_admin"),
    ("backup:get", "rule:project_reader_or_admin"),
    ("backup:get_all", "rule:project_reader_or_admin"),
    ("backup:update", "rule:project_member_or_admin"),
    ("backup:delete", "rule:project_member_or_admin"),
    ("backup:restore", "rule:project_member_or_admin"),
    ("backup:backup-export", "rule:admin_api"),
    ("backup:backup-import", "rule:admin_api"),
    ("volume_extension:backup_admin_actions:reset_status", "rule:admin_api"),
    ("volume_extension:backup_admin_actions:force_delete", "rule:admin_api"),
    // Volume types, their extra specs and access.
    ("volume_extension:type_get", "rule:project_reader_or_admin"),
    ("volume_extension:type_get_all", "rule:project_reader_or_admin"),
    ("volume_extension:types_manage", "rule:admin_api"),
    ("volume_extension:default_set_or_update", "rule:admin_api"),
    ("volume_extension:default_get", "rule:admin_api"),
    ("volume_extension:default_get_all", "rule:admin_api"),
    ("volume_extension:default_unset", "rule:admin_api"),
    ("volume_extension:types_extra_specs:create", "rule:admin_api"),
    ("volume_extension:types_extra_specs:update", "rule:admin_api"),
    ("volume_extension:types_extra_specs:delete", "rule:admin_api"),
    ("volume_extension:volume_type_access:addProjectAccess", "rule:admin_api"),
    ("volume_extension:volume_type_access:removeProjectAccess", "rule:admin_api"),
    // QoS specs.
    ("volume_extension:qos_specs_manage:create", "rule:admin_api"),
    ("volume_extension:qos_specs_manage:get", "rule:admin_api"),
    ("volume_extension:qos_specs_manage:get_all", "rule:admin_api"),
    ("volume_extension:qos_specs_manage:update", "rule:admin_api"),
    ("volume_extension:qos_specs_manage:delete", "rule:admin_api"),
    // Quotas, zones, pools, services.
    ("volume_extension:quotas:show", "rule:project_reader_or_admin"),
    ("volume_extension:quotas:update", "rule:admin_api"),
    ("volume_extension:availability_zone_list", "rule:project_reader_or_admin"),
    ("scheduler_extension:scheduler_stats:get_pools", "rule:admin_api"),
    ("volume_extension:services:index", "rule:admin_api"),
    ("volume_extension:services:update", "rule:admin_api"),
];

/// What the caller is, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub project_id: &'a str,
    pub user_id: &'a str,
    /// Lower-case role names, implied roles included (Keystone expands them in the token).
    pub roles: &'a [String],
    pub is_admin: bool,
    pub is_admin_project: bool,
    pub system_scope: Option<&'a str>,
}

/// What the call acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub project_id: &'a str,
    pub user_id: &'a str,
}

/// The rules in force: Cinder's defaults with the operator's overrides on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: BTreeMap<String, Check>,
}

static DEFAULT_POLICY: LazyLock<Arc<Policy>> =
    LazyLock::new(|| Arc::new(Policy::with_overrides(&[]).expect("the default rules parse")));

impl Policy {
    /// Cinder's new defaults, unchanged.
    pub fn defaults() -> Arc<Self> {
        DEFAULT_POLICY.clone()
    }

    /// The defaults with the rules of a `policy.yaml` (or `policy.json`) file on top; a rule the
    /// file names that the defaults lack is added, as oslo.policy adds it.
    pub fn from_file_text(text: &str) -> Result<Self, ServiceError> {
        Self::with_overrides(&parse_rule_file(text)?)
    }

    fn with_overrides(overrides: &[(String, String)]) -> Result<Self, ServiceError> {
        let mut rules = BTreeMap::new();
        let all = DEFAULTS
            .iter()
            .map(|(name, check)| (*name, *check))
            .chain(overrides.iter().map(|(n, c)| (n.as_str(), c.as_str())));
        for (name, text) in all {
            let check =
                Check::parse(text).map_err(|reason| invalid(format!("policy rule {name:?}: {reason} in {text:?}")))?;
            rules.insert(name.to_owned(), check);
        }
        let policy = Self { rules };
        for name in policy.rules.keys() {
            policy.check_references(name, &mut Vec::new())?;
        }
        Ok(policy)
    }

    /// Every `rule:` a rule refers to exists, and no rule refers back to itself.
    fn check_references<'a>(&'a self, name: &'a str, path: &mut Vec<&'a str>) -> Result<(), ServiceError> {
        if path.contains(&name) {
            return Err(invalid(format!(
                "policy rules refer to each other in a loop: {} -> {name}",
                path.join(" -> ")
            )));
        }
        let Some(check) = self.rules.get(name) else {
            return Err(invalid(format!(
                "policy rule {:?} refers to rule:{name}, which no default or override defines",
                path.last().copied().unwrap_or_default()
            )));
        };
        path.push(name);
        let mut referenced = BTreeSet::new();
        check.referenced_rules(&mut referenced);
        for next in referenced {
            self.check_references(next, path)?;
        }
        path.pop();
        Ok(())
    }

    /// Whether `rule` allows the call. A rule that does not exist allows nothing.
    pub fn allows(&self, rule: &str, credentials: &Credentials<'_>, target: &Target<'_>) -> bool {
        self.rules.get(rule).is_some_and(|check| check.holds(self, credentials, target))
    }

    /// `Ok` when `rule` allows the call, else Cinder's 403 naming the rule.
    pub fn enforce(&self, rule: &str, credentials: &Credentials<'_>, target: &Target<'_>) -> Result<(), ServiceError> {
        let Some(check) = self.rules.get(rule) else {
            return Err(ServiceError::new(ErrorCode::Internal, format!("policy rule {rule:?} is not registered")));
        };
        if check.holds(self, credentials, target) {
            return Ok(());
        }
        Err(ServiceError::new(ErrorCode::Forbidden, format!("Policy doesn't allow {rule} to be performed.")))
    }
}

fn invalid(message: String) -> ServiceError {
    ServiceError::new(ErrorCode::InvalidArgument, message)
}

/// One parsed check string of oslo.policy's language.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    Always,
    Never,
    Rule(String),
    Role(String),
    /// `key:value` against the credentials; the value is a literal or `%(key)s` of the target.
    Field {
        key: String,
        value: Value,
    },
    Not(Box<Check>),
    And(Vec<Check>),
    Or(Vec<Check>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Literal(String),
    Target(String),
}

impl Check {
    /// Parses a check string: `@`, `!`, `rule:x`, `role:x`, `key:value`, `not`, `and`, `or` and
    /// parentheses, with oslo.policy's precedence (not, then and, then or). An empty string is `@`.
    fn parse(text: &str) -> Result<Self, String> {
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return Ok(Self::Always);
        }
        let mut parser = Parser { tokens, at: 0 };
        let check = parser.or()?;
        match parser.tokens.get(parser.at) {
            None => Ok(check),
            Some(token) => Err(format!("unexpected {token:?}")),
        }
    }

    fn referenced_rules<'a>(&'a self, into: &mut BTreeSet<&'a str>) {
        match self {
            Self::Rule(name) => {
                into.insert(name);
            }
            Self::Not(inner) => inner.referenced_rules(into),
            Self::And(all) | Self::Or(all) => all.iter().for_each(|check| check.referenced_rules(into)),
            Self::Always | Self::Never | Self::Role(_) | Self::Field { .. } => {}
        }
    }

    fn holds(&self, policy: &Policy, credentials: &Credentials<'_>, target: &Target<'_>) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Rule(name) => policy.allows(name, credentials, target),
            Self::Role(role) => credentials.roles.iter().any(|held| held.eq_ignore_ascii_case(role)),
            Self::Field { key, value } => {
                let expected = match value {
                    Value::Literal(literal) => Some(literal.as_str()),
                    Value::Target(key) => match key.as_str() {
                        "project_id" => Some(target.project_id),
                        "user_id" => Some(target.user_id),
                        _ => None,
                    },
                };
                let held = match key.as_str() {
                    "project_id" => Some(credentials.project_id),
                    "user_id" => Some(credentials.user_id),
                    "is_admin" => Some(if credentials.is_admin { "True" } else { "False" }),
                    "is_admin_project" => Some(if credentials.is_admin_project { "True" } else { "False" }),
                    "system_scope" => credentials.system_scope,
                    _ => None,
                };
                // An empty target value never matches: a missing project is nobody's project.
                matches!((held, expected), (Some(held), Some(expected)) if !expected.is_empty() && held.eq_ignore_ascii_case(expected))
            }
            Self::Not(inner) => !inner.holds(policy, credentials, target),
            Self::And(all) => all.iter().all(|check| check.holds(policy, credentials, target)),
            Self::Or(any) => any.iter().any(|check| check.holds(policy, credentials, target)),
        }
    }
}

/// Splits a check string into words and parentheses. A parenthesis inside a word (the
/// `%(project_id)s` of a target reference) belongs to the word.
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for character in text.chars() {
        let opens_word_group = word.matches('(').count() > word.matches(')').count();
        let grouping = (character == '(' && word.is_empty()) || (character == ')' && !opens_word_group);
        if grouping || character.is_whitespace() {
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            if grouping {
                tokens.push(character.to_string());
            }
        } else {
            word.push(character);
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

struct Parser {
    tokens: Vec<String>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn or(&mut self) -> Result<Check, String> {
        let mut any = vec![self.and()?];
        while self.peek().is_some_and(|token| token.eq_ignore_ascii_case("or")) {
            self.at += 1;
            any.push(self.and()?);
        }
        Ok(if any.len() == 1 { any.remove(0) } else { Check::Or(any) })
    }

    fn and(&mut self) -> Result<Check, String> {
        let mut all = vec![self.unary()?];
        while self.peek().is_some_and(|token| token.eq_ignore_ascii_case("and")) {
            self.at += 1;
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Check::And(all) })
    }

    fn unary(&mut self) -> Result<Check, String> {
        let token = self.next().ok_or("the check ends where a check was expected")?;
        if token.eq_ignore_ascii_case("not") {
            return Ok(Check::Not(Box::new(self.unary()?)));
        }
        if token == "(" {
            let inner = self.or()?;
            return match self.next().as_deref() {
                Some(")") => Ok(inner),
                _ => Err("a '(' is not closed".into()),
            };
        }
        match token.as_str() {
            "@" => return Ok(Check::Always),
            "!" => return Ok(Check::Never),
            ")" | "and" | "or" => return Err(format!("unexpected {token:?}")),
            _ => {}
        }
        let (kind, value) = token.split_once(':').ok_or_else(|| {
            format!("{token:?} is not a check: checks are @, !, rule:<name>, role:<name> or <field>:<value>")
        })?;
        if value.is_empty() {
            return Err(format!("{token:?} has no value after ':'"));
        }
        Ok(match kind {
            "rule" => Check::Rule(value.to_owned()),
            "role" => Check::Role(value.to_owned()),
            "http" | "https" => return Err(format!("{token:?}: remote (http) checks are not supported")),
            "project_id" | "user_id" | "is_admin" | "is_admin_project" | "system_scope" => {
                let value = match value.strip_prefix("%(").and_then(|rest| rest.strip_suffix(")s")) {
                    Some(key) if key == "project_id" || key == "user_id" => Value::Target(key.to_owned()),
                    Some(key) => return Err(format!("%({key})s: the target has project_id and user_id only")),
                    None => Value::Literal(value.to_owned()),
                };
                Check::Field { key: kind.to_owned(), value }
            }
            _ => {
                return Err(format!(
                    "{kind:?} is not a field Basalt's credentials have (project_id, user_id, is_admin, is_admin_project, system_scope)"
                ));
            }
        })
    }
}

/// The `name: check` pairs of a policy file: JSON (an object of strings), or YAML written as
/// oslo.policy's generated samples are (one `"name": "check"` per line, comments, blank lines).
fn parse_rule_file(text: &str) -> Result<Vec<(String, String)>, ServiceError> {
    if text.trim_start().starts_with('{') {
        let rules: BTreeMap<String, String> = serde_json::from_str(text)
            .map_err(|error| invalid(format!("policy file: not a JSON object of strings: {error}")))?;
        return Ok(rules.into_iter().collect());
    }
    let mut rules = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line == "---" {
            continue;
        }
        let bad = |what: &str| {
            invalid(format!("policy file line {number}: {what}; write each rule on one line as \"name\": \"check\""))
        };
        let (name, rest) = yaml_scalar(line).ok_or_else(|| bad("an unterminated quote"))?;
        let rest = rest.trim_start().strip_prefix(':').ok_or_else(|| bad("no ':' after the rule name"))?;
        let rest = rest.trim_start();
        let (check, after) = if rest.is_empty() {
            (String::new(), "")
        } else {
            yaml_scalar(rest).ok_or_else(|| bad("an unterminated quote"))?
        };
        let after = after.trim();
        if !after.is_empty() && !after.starts_with('#') {
            return Err(bad(&format!("unexpected {after:?} after the check")));
        }
        if name.is_empty() {
            return Err(bad("an empty rule name"));
        }
        rules.push((name, check));
    }
    Ok(rules)
}

/// One YAML scalar at the start of `text`: quoted ('' and "" with \" escapes) or plain (up to a
/// `:` followed by a space, a ` #` comment, or the end). Returns it and what follows.
fn yaml_scalar(text: &str) -> Option<(String, &str)> {
    let mut characters = text.char_indices();
    match characters.next()? {
        (_, quote @ ('"' | '\'')) => {
            let mut value = String::new();
            let mut escaped = false;
            for (at, character) in characters {
                if escaped {
                    value.push(character);
                    escaped = false;
                } else if character == '\\' && quote == '"' {
                    escaped = true;
                } else if character == quote {
                    return Some((value, &text[at + 1..]));
                } else {
                    value.push(character);
                }
            }
            None
        }
        _ => {
            let end = [text.find(": "), text.find(" #"), text.strip_suffix(':').map(|rest| rest.len())]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(text.len());
            Some((text[..end].trim_end().to_owned(), &text[end..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn allows(policy: &Policy, rule: &str, held: &[&str], project: &str) -> bool {
        let roles = roles(held);
        let is_admin = policy.allows(
            "context_is_admin",
            &Credentials {
                project_id: project,
                user_id: "u",
                roles: &roles,
                is_admin: false,
                is_admin_project: true,
                system_scope: None,
            },
            &Target { project_id: project, user_id: "u" },
        );
        let credentials = Credentials {
            project_id: project,
            user_id: "u",
            roles: &roles,
            is_admin,
            is_admin_project: true,
            system_scope: None,
        };
        policy.allows(rule, &credentials, &Target { project_id: A, user_id: "" })
    }

    #[test]
    fn new_defaults_split_admin_member_and_reader() {
        let policy = Policy::defaults();
        for (rule, admin, member, reader, other_member) in [
            ("volume:create", true, true, false, false),
            ("volume:get_all", true, true, true, false),
            ("volume:force_delete", true, false, false, false),
            ("backup:backup-import", true, false, false, false),
        ] {
            assert_eq!(allows(&policy, rule, &["admin", "member", "reader"], A), admin, "{rule} admin");
            assert_eq!(allows(&policy, rule, &["member", "reader"], A), member, "{rule} member");
            assert_eq!(allows(&policy, rule, &["reader"], A), reader, "{rule} reader");
            assert_eq!(allows(&policy, rule, &["member", "reader"], B), other_member, "{rule} other project");
        }
        assert!(!allows(&policy, "no:such:rule", &["admin"], A));
        assert_eq!(
            policy
                .enforce(
                    "volume:create",
                    &Credentials {
                        project_id: A,
                        user_id: "u",
                        roles: &roles(&["reader"]),
                        is_admin: false,
                        is_admin_project: true,
                        system_scope: None
                    },
                    &Target { project_id: A, user_id: "u" }
                )
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn overrides_from_yaml_and_json_replace_and_add_rules() {
        let yaml = "# operators' file\n\"is_reader\": \"role:reader\"\n'volume:create': \"rule:is_reader or rule:context_is_admin\"\nvolume:delete: \"!\"   # nobody\n\nbackup:get: ''\n";
        let policy = Policy::from_file_text(yaml).unwrap();
        assert!(allows(&policy, "volume:create", &["reader"], A));
        assert!(!allows(&policy, "volume:delete", &["admin"], A));
        assert!(allows(&policy, "backup:get", &[], A));
        let json = Policy::from_file_text(r#"{"volume:get": "role:auditor and project_id:%(project_id)s"}"#).unwrap();
        assert!(allows(&json, "volume:get", &["auditor"], A));
        assert!(!allows(&json, "volume:get", &["auditor"], B));
    }

    #[test]
    fn bad_files_say_where_and_what_is_allowed() {
        for (text, expected) in [
            ("volume:create: \"role:a and\"\n", "ends where a check was expected"),
            ("volume:create: \"(role:a\"\n", "not closed"),
            ("volume:create: \"rule:nothing\"\n", "no default or override defines"),
            ("a: \"rule:b\"\nb: \"rule:a\"\n", "loop"),
            ("volume:create: \"http://evil\"\n", "not supported"),
            ("volume:create: \"domain:x\"\n", "not a field"),
            ("volume:create \"role:a\"\n", "line 1"),
            ("x: \"role:a\n", "unterminated"),
        ] {
            let error = Policy::from_file_text(text).unwrap_err();
            assert!(error.message.contains(expected), "{text:?}: {}", error.message);
        }
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let check = Check::parse("role:a or role:b and not role:c").unwrap();
        let policy = Policy::defaults();
        let holds = |held: &[&str]| {
            let roles = roles(held);
            check.holds(
                &policy,
                &Credentials {
                    project_id: A,
                    user_id: "u",
                    roles: &roles,
                    is_admin: false,
                    is_admin_project: true,
                    system_scope: None,
                },
                &Target { project_id: A, user_id: "u" },
            )
        };
        assert!(holds(&["a", "c"]));
        assert!(holds(&["b"]));
        assert!(!holds(&["b", "c"]));
    }
}
