//! Kubeconfig files with embedded certificates, laid out like client-go's
//! `clientcmd.Write` output that kubeadm produces (keys sorted, one cluster,
//! one user, context `<user>@<cluster>`). Written by hand from base64 and
//! URLs only, so the output is byte-stable and needs no YAML quoting.

use base64::Engine;

/// What goes into one kubeconfig.
pub struct Kubeconfig<'a> {
    /// kubeadm's `clusterName`.
    pub cluster: &'a str,
    /// The client certificate's CN, which kubeadm also uses as the user name.
    pub user: &'a str,
    pub server: &'a str,
    pub ca_pem: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

impl Kubeconfig<'_> {
    pub fn render(&self) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let Kubeconfig {
            cluster,
            user,
            server,
            ..
        } = self;
        format!(
            "apiVersion: v1\n\
             clusters:\n\
             - cluster:\n\
             \x20   certificate-authority-data: {ca}\n\
             \x20   server: {server}\n\
             \x20 name: {cluster}\n\
             contexts:\n\
             - context:\n\
             \x20   cluster: {cluster}\n\
             \x20   user: {user}\n\
             \x20 name: {user}@{cluster}\n\
             current-context: {user}@{cluster}\n\
             kind: Config\n\
             preferences: {{}}\n\
             users:\n\
             - name: {user}\n\
             \x20 user:\n\
             \x20   client-certificate-data: {cert}\n\
             \x20   client-key-data: {key}\n",
            ca = b64(self.ca_pem),
            cert = b64(self.cert_pem),
            key = b64(self.key_pem),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_yaml_with_the_given_values() {
        let text = Kubeconfig {
            cluster: "hakube",
            user: "system:kube-scheduler",
            server: "https://192.168.122.11:6443",
            ca_pem: "CA",
            cert_pem: "CERT",
            key_pem: "KEY",
        }
        .render();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(v["kind"].as_str(), Some("Config"));
        assert_eq!(
            v["current-context"].as_str(),
            Some("system:kube-scheduler@hakube")
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://192.168.122.11:6443")
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
            Some("Q0E=")
        );
        assert_eq!(
            v["contexts"][0]["context"]["user"].as_str(),
            Some("system:kube-scheduler")
        );
        assert_eq!(
            v["users"][0]["name"].as_str(),
            Some("system:kube-scheduler")
        );
        assert_eq!(
            v["users"][0]["user"]["client-key-data"].as_str(),
            Some("S0VZ")
        );
        assert!(v["preferences"].as_mapping().is_some_and(|m| m.is_empty()));
    }
}
