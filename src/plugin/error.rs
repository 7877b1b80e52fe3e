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
    /// The namespace the request was made in.
    pub namespace: &'a str,
    /// The object's name, for requests about one object.
    pub name: Option<&'a str>,
}

impl Access<'_> {
    /// The error a failed request under this access becomes.
    pub fn fail(&self, error: kube::Error) -> PluginError {
        let namespace = self.namespace.to_owned();
        match error {
            kube::Error::Api(status) if status.code == 403 => {
                PluginError::Forbidden { verb: self.verb, resource: self.resource, namespace, server: status.message }
            }
            kube::Error::Api(status) if status.code == 404 => {
                PluginError::NotFound { kind: self.kind, name: self.name.unwrap_or_default().to_owned(), namespace }
            }
            other => {
                PluginError::Api { verb: self.verb, resource: self.resource, namespace, message: other.to_string() }
            }
        }
    }
}

/// Why a `kubectl keyward` command failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// RBAC refused a request: names the verb and resource to ask for.
    #[error(
        "forbidden: you may not {verb} {resource} in namespace {namespace}. Ask your cluster admin for a Role \
         granting verb \"{verb}\" on \"{resource}\" there (check with `kubectl auth can-i {verb} {resource} -n \
         {namespace}`). The API server said: {server}"
    )]
    Forbidden { verb: &'static str, resource: &'static str, namespace: String, server: String },
    /// The object does not exist.
    #[error("{kind} {name} not found in namespace {namespace}")]
    NotFound { kind: &'static str, name: String, namespace: String },
    /// Any other failed API request.
    #[error("cannot {verb} {resource} in namespace {namespace}: {message}")]
    Api { verb: &'static str, resource: &'static str, namespace: String, message: String },
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
