//! Who is calling, and what they may do.
//!
//! **Identity.** A client or peer certificate names exactly one principal,
//! in one SAN URI:
//!
//! ```text
//! farmlog://landlord/<role>
//! farmlog://tenant/<customer>/<role>
//! farmlog://tenant/<customer>/<role>/group/<security-group>
//! farmlog://tenant/<customer>/<role>/component/<component>
//! ```
//!
//! The optional part narrows the scope from the whole customer to one
//! security group or one component. `node` is the role of a farmlog
//! node's own certificate (landlord only): it alone may send Raft traffic.
//!
//! **Authorization** is one table, [`RULES`]: for each operation, the
//! roles that may call it, and whether a tenant's principal may (it acts
//! in its own namespace only) or only the landlord's. `docs/auth.md`
//! prints the same table. A call the table refuses is PERMISSION_DENIED
//! and changes nothing; an object outside the caller's tenant or scope is
//! NOT_FOUND, exactly like a missing one (the services check that).

use std::fmt;

use farmlog_engine::state::command::{LANDLORD, NAME_BYTES_MAX};

/// The URI scheme of a principal.
pub const PRINCIPAL_SCHEME: &str = "farmlog://";
/// The principal of a farmlog node (what its own Tick commands carry).
pub const NODE_PRINCIPAL: &str = "farmlog://landlord/node";

/// A principal's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The farm operator (landlord) or a customer's administrator.
    Admin,
    /// A landlord-hosted applications MLM: publishes back-channel messages,
    /// grants bulk transfers.
    ApplicationsMlm,
    /// A customer MLM, or a landlord-hosted aggregation MLM.
    IntermediateMlm,
    Proxy,
    /// Reads and subscribes to upstream data.
    ServiceModule,
    /// A farmlog node (landlord only): Raft traffic between peers.
    Node,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::ApplicationsMlm,
        Role::IntermediateMlm,
        Role::Proxy,
        Role::ServiceModule,
        Role::Node,
    ];

    /// The name in a principal URI.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ApplicationsMlm => "applications-mlm",
            Role::IntermediateMlm => "intermediate-mlm",
            Role::Proxy => "proxy",
            Role::ServiceModule => "service-module",
            Role::Node => "node",
        }
    }

    fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == name)
    }
}

/// How far a tenant principal reaches inside its customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole customer (or, for the landlord, the whole farm).
    Whole,
    /// The components of one security group.
    Group(String),
    /// One component.
    Component(String),
}

/// Who a call comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// [`LANDLORD`] or the customer's tenant name.
    pub tenant: String,
    pub role: Role,
    pub scope: Scope,
}

/// Why a certificate names no usable principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    #[error("the client certificate carries no farmlog:// SAN URI")]
    Missing,
    #[error("the client certificate carries {0} farmlog:// SAN URIs; it must name exactly one principal")]
    Several(usize),
    #[error("the client certificate cannot be read: {0}")]
    Certificate(String),
    #[error("bad principal {uri:?}: {reason}")]
    Malformed { uri: String, reason: String },
}

impl Principal {
    pub fn is_landlord(&self) -> bool {
        self.tenant == LANDLORD
    }

    /// The principal's URI, as written in certificates and in the log.
    pub fn uri(&self) -> String {
        let scope = match &self.scope {
            Scope::Whole => String::new(),
            Scope::Group(group) => format!("/group/{group}"),
            Scope::Component(component) => format!("/component/{component}"),
        };
        match self.is_landlord() {
            true => format!("{PRINCIPAL_SCHEME}landlord/{}{scope}", self.role.name()),
            false => format!("{PRINCIPAL_SCHEME}tenant/{}/{}{scope}", self.tenant, self.role.name()),
        }
    }

    /// Parses a principal URI (see the module docs).
    pub fn parse(uri: &str) -> Result<Principal, PrincipalError> {
        let malformed = |reason: &str| PrincipalError::Malformed {
            uri: uri.chars().take(2 * NAME_BYTES_MAX).collect(),
            reason: reason.to_string(),
        };
        let rest = uri
            .strip_prefix(PRINCIPAL_SCHEME)
            .ok_or_else(|| malformed("it does not start with farmlog://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if let Some(part) = parts.iter().find(|part| !valid_name(part)) {
            return Err(malformed(&format!(
                "{part:?} is not a name (1..={NAME_BYTES_MAX} bytes of letters, digits, '-', '_', '.')"
            )));
        }
        let role = |name: &str| Role::parse(name).ok_or_else(|| malformed(&format!("unknown role {name:?}")));
        let scope = |parts: &[&str]| match parts {
            [] => Ok(Scope::Whole),
            ["group", group] => Ok(Scope::Group(group.to_string())),
            ["component", component] => Ok(Scope::Component(component.to_string())),
            _ => Err(malformed("the scope must be /group/<name> or /component/<id>")),
        };
        let principal = match parts.as_slice() {
            ["landlord", name] => Principal {
                tenant: LANDLORD.to_string(),
                role: role(name)?,
                scope: Scope::Whole,
            },
            ["tenant", customer, name, more @ ..] => {
                if *customer == LANDLORD {
                    return Err(malformed("the landlord is farmlog://landlord/<role>"));
                }
                let role = role(name)?;
                if role == Role::Node {
                    return Err(malformed("only the landlord has nodes"));
                }
                Principal {
                    tenant: customer.to_string(),
                    role,
                    scope: scope(more)?,
                }
            }
            _ => return Err(malformed(
                "expected farmlog://landlord/<role> or farmlog://tenant/<customer>/<role>[/group/<g>|/component/<c>]",
            )),
        };
        Ok(principal)
    }

    /// The principal of a client certificate (DER): exactly one farmlog://
    /// SAN URI.
    pub fn from_certificate(der: &[u8]) -> Result<Principal, PrincipalError> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, certificate) =
            X509Certificate::from_der(der).map_err(|error| PrincipalError::Certificate(error.to_string()))?;
        let names = certificate
            .subject_alternative_name()
            .map_err(|error| PrincipalError::Certificate(error.to_string()))?;
        let uris: Vec<&str> = names
            .iter()
            .flat_map(|extension| extension.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(PRINCIPAL_SCHEME) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(PrincipalError::Missing),
            [uri] => Principal::parse(uri),
            several => Err(PrincipalError::Several(several.len())),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.uri())
    }
}

fn valid_name(part: &str) -> bool {
    (1..=NAME_BYTES_MAX).contains(&part.len())
        && part
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

/// Who may call an operation: roles of the landlord, roles of a tenant.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub op: Op,
    pub landlord: &'static [Role],
    pub tenant: &'static [Role],
}

/// Every operation of the public services (and the internal Raft one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    // Topology.
    RegisterCustomer,
    RegisterComponent,
    SetEnabled,
    Deregister,
    MapManagementId,
    DefineGroup,
    ChangeGroupMember,
    ReadTopology,
    // Upstream messages and alarms.
    SendUpstream,
    ReadMessages,
    // Streams.
    AppendStream,
    ReadStreams,
    // Back-channel spools.
    Publish,
    Poll,
    Settle,
    Redrive,
    ConfigureSpool,
    ReadSpools,
    // Bulk transfers.
    GrantTransfer,
    DenyTransfer,
    Transferred,
    ReadTransfers,
    // Throttle.
    SetThrottle,
    ReportUsage,
    ReadThrottle,
    // Sessions (idempotent retries).
    OpenSession,
    // Admin.
    Admin,
    // Internal.
    Raft,
}

use Role::{Admin as A, ApplicationsMlm as AM, IntermediateMlm as IM, Proxy as P, ServiceModule as SM};

/// Roles that act for components and read what concerns them.
const COMPONENTS: &[Role] = &[A, AM, IM, P, SM];

/// The authorization table (role × operation). `docs/auth.md` is this table.
pub const RULES: &[Rule] = &[
    Rule {
        op: Op::RegisterCustomer,
        landlord: &[A],
        tenant: &[],
    },
    Rule {
        op: Op::RegisterComponent,
        landlord: &[A],
        tenant: &[A],
    },
    Rule {
        op: Op::SetEnabled,
        landlord: &[A],
        tenant: &[A, IM],
    },
    Rule {
        op: Op::Deregister,
        landlord: &[A],
        tenant: &[A],
    },
    Rule {
        op: Op::MapManagementId,
        landlord: &[A],
        tenant: &[A, P],
    },
    Rule {
        op: Op::DefineGroup,
        landlord: &[A],
        tenant: &[A],
    },
    Rule {
        op: Op::ChangeGroupMember,
        landlord: &[A],
        tenant: &[A],
    },
    Rule {
        op: Op::ReadTopology,
        landlord: COMPONENTS,
        tenant: COMPONENTS,
    },
    Rule {
        op: Op::SendUpstream,
        landlord: &[A, AM, IM],
        tenant: &[A, IM, P],
    },
    Rule {
        op: Op::ReadMessages,
        landlord: &[A, AM, IM, SM],
        tenant: &[A, IM, SM],
    },
    Rule {
        op: Op::AppendStream,
        landlord: &[A, AM, IM, SM],
        tenant: &[A, IM, SM],
    },
    Rule {
        op: Op::ReadStreams,
        landlord: COMPONENTS,
        tenant: COMPONENTS,
    },
    Rule {
        op: Op::Publish,
        landlord: &[A, AM],
        tenant: &[],
    },
    Rule {
        op: Op::Poll,
        landlord: &[AM, IM],
        tenant: &[IM, P],
    },
    Rule {
        op: Op::Settle,
        landlord: &[AM, IM],
        tenant: &[IM, P],
    },
    Rule {
        op: Op::Redrive,
        landlord: &[A],
        tenant: &[A],
    },
    Rule {
        op: Op::ConfigureSpool,
        landlord: &[A],
        tenant: &[A],
    },
    Rule {
        op: Op::ReadSpools,
        landlord: &[A, AM, IM],
        tenant: &[A, IM, P],
    },
    Rule {
        op: Op::GrantTransfer,
        landlord: &[A, AM],
        tenant: &[],
    },
    Rule {
        op: Op::DenyTransfer,
        landlord: &[A, AM, IM],
        tenant: &[A, IM],
    },
    Rule {
        op: Op::Transferred,
        landlord: &[],
        tenant: &[P],
    },
    Rule {
        op: Op::ReadTransfers,
        landlord: &[A, AM, IM],
        tenant: &[A, IM, P],
    },
    Rule {
        op: Op::SetThrottle,
        landlord: &[A],
        tenant: &[A],
    },
    Rule {
        op: Op::ReportUsage,
        landlord: &[IM],
        tenant: &[IM],
    },
    Rule {
        op: Op::ReadThrottle,
        landlord: &[A, AM, IM],
        tenant: &[A, IM],
    },
    Rule {
        op: Op::OpenSession,
        landlord: COMPONENTS,
        tenant: COMPONENTS,
    },
    Rule {
        op: Op::Admin,
        landlord: &[A],
        tenant: &[],
    },
    Rule {
        op: Op::Raft,
        landlord: &[Role::Node],
        tenant: &[],
    },
];

/// The rule of `op` in [`RULES`].
pub fn rule(op: Op) -> &'static Rule {
    RULES.iter().find(|rule| rule.op == op).unwrap_or(&Rule {
        op: Op::Raft,
        landlord: &[],
        tenant: &[],
    })
}

/// Whether `principal`'s role may call `op` at all (the table). Whether
/// the objects it names are in its tenant and scope is the service's
/// check.
pub fn allowed(principal: &Principal, op: Op) -> bool {
    let rule = rule(op);
    let roles = match principal.is_landlord() {
        true => rule.landlord,
        false => rule.tenant,
    };
    roles.contains(&principal.role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_print_back() {
        for uri in [
            "farmlog://landlord/admin",
            "farmlog://landlord/applications-mlm",
            "farmlog://landlord/node",
            "farmlog://tenant/acme/proxy",
            "farmlog://tenant/acme/admin/group/plant-3",
            "farmlog://tenant/acme/intermediate-mlm/component/mlm-1",
        ] {
            let principal = Principal::parse(uri).unwrap();
            assert_eq!(principal.uri(), uri);
        }
        let scoped = Principal::parse("farmlog://tenant/acme/proxy/component/p1").unwrap();
        assert_eq!(scoped.tenant, "acme");
        assert_eq!(scoped.role, Role::Proxy);
        assert_eq!(scoped.scope, Scope::Component("p1".into()));
    }

    #[test]
    fn malformed_principals_are_refused_with_a_reason() {
        for (uri, says) in [
            ("https://landlord/admin", "farmlog://"),
            ("farmlog://landlord/root", "unknown role"),
            ("farmlog://tenant/acme/node", "only the landlord"),
            ("farmlog://tenant/landlord/admin", "farmlog://landlord"),
            ("farmlog://tenant/acme/proxy/site/x", "scope"),
            ("farmlog://tenant/acme/proxy/group", "scope"),
            ("farmlog://tenant//proxy", "not a name"),
            ("farmlog://tenant/a b/proxy", "not a name"),
            ("farmlog://landlord/admin/component/x", "expected"),
        ] {
            let error = Principal::parse(uri).unwrap_err().to_string();
            assert!(error.contains(says), "{uri}: {error}");
        }
        let long = format!("farmlog://tenant/{}/proxy", "a".repeat(NAME_BYTES_MAX + 1));
        assert!(Principal::parse(&long).is_err());
    }

    #[test]
    fn every_operation_has_exactly_one_rule() {
        let mut ops: Vec<Op> = RULES.iter().map(|rule| rule.op).collect();
        let count = ops.len();
        ops.sort();
        ops.dedup();
        assert_eq!(ops.len(), count, "an operation has two rules");
        assert_eq!(rule(Op::Raft).landlord, &[Role::Node]);
    }

    #[test]
    fn the_fixed_rules_of_the_issue_hold() {
        let landlord = |role| Principal {
            tenant: LANDLORD.into(),
            role,
            scope: Scope::Whole,
        };
        let tenant = |role| Principal {
            tenant: "acme".into(),
            role,
            scope: Scope::Whole,
        };
        // Only an applications MLM or a landlord admin may publish.
        for role in Role::ALL {
            assert_eq!(
                allowed(&landlord(role), Op::Publish),
                matches!(role, Role::Admin | Role::ApplicationsMlm)
            );
            assert!(!allowed(&tenant(role), Op::Publish));
        }
        // Only a landlord admin may call the Admin service.
        for role in Role::ALL {
            assert_eq!(allowed(&landlord(role), Op::Admin), role == Role::Admin);
            assert!(!allowed(&tenant(role), Op::Admin));
        }
        // Only nodes send Raft traffic.
        for role in Role::ALL {
            assert_eq!(allowed(&landlord(role), Op::Raft), role == Role::Node);
        }
        // A node's certificate is good for nothing else.
        for rule in RULES.iter().filter(|rule| rule.op != Op::Raft) {
            assert!(!allowed(&landlord(Role::Node), rule.op), "{:?}", rule.op);
        }
    }
}

/// The authorization table as Markdown (`docs/auth.md` holds this table;
/// a test keeps them equal).
pub fn rules_markdown() -> String {
    let names = |roles: &[Role]| match roles.is_empty() {
        true => "—".to_string(),
        false => roles.iter().map(|role| role.name()).collect::<Vec<_>>().join(", "),
    };
    let mut table = String::from("| operation | landlord roles | tenant roles |\n|---|---|---|\n");
    for rule in RULES {
        table.push_str(&format!(
            "| {:?} | {} | {} |\n",
            rule.op,
            names(rule.landlord),
            names(rule.tenant)
        ));
    }
    table
}

#[cfg(test)]
mod docs {
    #[test]
    fn docs_auth_md_holds_the_table() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/auth.md")).unwrap();
        assert!(
            docs.contains(&super::rules_markdown()),
            "docs/auth.md is out of date; paste this table in:\n{}",
            super::rules_markdown()
        );
    }
}
