//! What went wrong, said so that a person knows what to do: the verb and resource RBAC refused, the object that is missing.

use crate::runtime::kubeconfig::ConfigError;

/// One API request, described the way RBAC and `kubectl auth can-i` name it.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The RBAC verb: `get`, `list`, `patch`.
    pub verb: &'static str,
    /// The RBAC resource, with its API group: `apikeys.keyward.dev`, `secrets`.
    pub resource: &'static str,
    /// The object's kind, for "not found" messages.
    pub kind: &'static str,
    /// The namespace the request was made in; `None` for a cluster-scoped object (a ClusterApiKey).
    pub namespace: Option<&'a str>,
    /// The object's name, for requests about one object.
    pub name: Option<&'a str>,
}

impl Access<'_> {
    /// The error a failed request under this access becomes.
    pub fn fail(&self, error: kube::Error) -> PluginError {
        let scope = Scope(self.namespace.map(str::to_owned));
        match error {
            kube::Error::Api(status) if status.code == 403 => {
                PluginError::Forbidden { verb: self.verb, resource: self.resource, scope, server: status.message }
            }
            kube::Error::Api(status) if status.code == 404 => {
                PluginError::NotFound { kind: self.kind, name: self.name.unwrap_or_default().to_owned(), scope }
            }
            other => PluginError::Api { verb: self.verb, resource: self.resource, scope, message: other.to_string() },
        }
    }
}

/// Why a `kubectl keyward` command failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// RBAC refused a request: names the verb and resource to ask for.
    #[error(
        "forbidden: you may not {verb} {resource} {where_}. Ask your cluster admin for a {role} granting verb \
         \"{verb}\" on \"{resource}\"{there} (check with `kubectl auth can-i {verb} {resource}{flag}`). The API \
         server said: {server}",
        where_ = .scope.where_(), role = .scope.role(), there = .scope.there(), flag = .scope.flag()
    )]
    Forbidden { verb: &'static str, resource: &'static str, scope: Scope, server: String },
    /// The object does not exist.
    #[error("{kind} {name} not found{in_}", in_ = .scope.in_())]
    NotFound { kind: &'static str, name: String, scope: Scope },
    /// Any other failed API request.
    #[error("cannot {verb} {resource} {where_}: {message}", where_ = .scope.where_())]
    Api { verb: &'static str, resource: &'static str, scope: Scope, message: String },
    /// The command will not go ahead (revoke without confirmation, no token to print).
    #[error("{0}")]
    Refused(String),
    /// Standard input, standard output or the terminal failed.
    // The I/O error is the source: printed as a chain (`{:#}`), it follows once.
    #[error("reading or writing the terminal failed")]
    Io(#[from] std::io::Error),
    /// No cluster could be reached from the kubeconfig.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where a request was made: a namespace, or cluster-wide (`None`), said the way RBAC needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(pub Option<String>);

impl Scope {
    /// `in namespace team-a`, or `cluster-wide`.
    fn where_(&self) -> String {
        self.0.as_ref().map_or_else(|| "cluster-wide".to_owned(), |ns| format!("in namespace {ns}"))
    }

    /// ` in namespace team-a`, or nothing (a cluster-scoped object is not in a namespace).
    fn in_(&self) -> String {
        self.0.as_ref().map_or_else(String::new, |ns| format!(" in namespace {ns}"))
    }

    /// A namespace's rights come from a Role there; cluster-scoped ones only from a ClusterRole.
    fn role(&self) -> &'static str {
        if self.0.is_some() { "Role" } else { "ClusterRole (bound with a ClusterRoleBinding)" }
    }

    fn there(&self) -> &'static str {
        if self.0.is_some() { " there" } else { "" }
    }

    /// The `-n` flag of the `kubectl auth can-i` line.
    fn flag(&self) -> String {
        self.0.as_ref().map_or_else(String::new, |ns| format!(" -n {ns}"))
    }
}
