//! The certificates and keys of a one-machine Kubernetes control plane, laid
//! out as kubeadm lays out `/etc/kubernetes/pki`: a cluster CA, the API
//! server's serving certificate, its client certificate for kubelets, a
//! front-proxy CA and client (aggregation layer), the service-account signing
//! key, an admin client certificate in `system:masters`, and the client
//! certificates of a node's kubelet, kube-proxy, and of the controller
//! manager and scheduler.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::openbao::write_private;

/// The lab's one node (its kubelet's client certificate names it).
pub const NODE_NAME: &str = "zt-lab";

/// Paths of the PEM files, all under one folder.
#[derive(Debug, Clone)]
pub struct Pki {
    /// Folder holding every file below.
    pub dir: PathBuf,
}

/// A signing CA kept in memory while the leaves are issued.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(common_name: &str) -> anyhow::Result<(Self, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok((Self { params, key }, cert.pem()))
    }

    /// Issues a leaf: (certificate PEM, key PEM).
    fn issue(
        &self,
        common_name: &str,
        organization: Option<&str>,
        sans: &[SanType],
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(o) = organization {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.subject_alt_names = sans.to_vec();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

impl Pki {
    /// Generates every file into `dir`. `server_ips` and `server_names` are
    /// the API server's subject alternative names beyond the in-cluster
    /// `kubernetes.default.svc…` names.
    pub fn generate(
        dir: &Path,
        server_ips: &[IpAddr],
        server_names: &[&str],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pki = Self {
            dir: dir.to_path_buf(),
        };
        let (ca, ca_pem) = Ca::new("devstack-kubernetes-ca")?;
        std::fs::write(pki.ca_cert(), &ca_pem)?;
        write_private(&pki.ca_key(), ca.key.serialize_pem().as_bytes())?;

        let mut sans: Vec<SanType> = server_ips
            .iter()
            .map(|ip| SanType::IpAddress(*ip))
            .collect();
        for name in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .iter()
        .chain(server_names)
        {
            sans.push(SanType::DnsName((*name).try_into()?));
        }
        pki.write_pair(
            "apiserver",
            ca.issue(
                "kube-apiserver",
                None,
                &sans,
                ExtendedKeyUsagePurpose::ServerAuth,
            )?,
        )?;
        pki.write_pair(
            "apiserver-kubelet-client",
            ca.issue(
                "kube-apiserver-kubelet-client",
                Some("system:masters"),
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
            )?,
        )?;
        pki.write_pair(
            "admin",
            ca.issue(
                "kubernetes-admin",
                Some("system:masters"),
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
            )?,
        )?;

        // The lab node's components (devstack::kube::lab), as kubeadm names them.
        for (name, cn, org) in [
            (
                "kubelet",
                format!("system:node:{NODE_NAME}"),
                Some("system:nodes"),
            ),
            (
                "controller-manager",
                "system:kube-controller-manager".into(),
                None,
            ),
            ("scheduler", "system:kube-scheduler".into(), None),
            ("kube-proxy", "system:kube-proxy".into(), None),
        ] {
            pki.write_pair(
                name,
                ca.issue(&cn, org, &[], ExtendedKeyUsagePurpose::ClientAuth)?,
            )?;
        }

        let (front, front_pem) = Ca::new("front-proxy-ca")?;
        std::fs::write(pki.front_proxy_ca(), &front_pem)?;
        pki.write_pair(
            "front-proxy-client",
            front.issue(
                "front-proxy-client",
                None,
                &[],
                ExtendedKeyUsagePurpose::ClientAuth,
            )?,
        )?;

        let sa = KeyPair::generate()?;
        write_private(&pki.service_account_key(), sa.serialize_pem().as_bytes())?;
        std::fs::write(pki.service_account_pub(), sa.public_key_pem())?;
        Ok(pki)
    }

    /// Re-uses a folder made by [`Pki::generate`].
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn write_pair(&self, name: &str, (cert, key): (String, String)) -> anyhow::Result<()> {
        std::fs::write(self.dir.join(format!("{name}.crt")), cert)
            .with_context(|| format!("writing {name}.crt"))?;
        write_private(&self.dir.join(format!("{name}.key")), key.as_bytes())
    }

    /// The cluster CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The cluster CA key (signs kubelet and other client certificates).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// `<name>.crt` of an issued pair.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }
    /// `<name>.key` of an issued pair.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
    /// The front-proxy (aggregation layer) CA certificate.
    pub fn front_proxy_ca(&self) -> PathBuf {
        self.dir.join("front-proxy-ca.crt")
    }
    /// The service-account token signing key.
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    /// The service-account token verification key.
    pub fn service_account_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
}
