//! The I/O of Argo trigger sources read when a trigger fires: a file, an
//! object from the cluster (through the submitter), an HTTP(S) URL. What the
//! read text becomes is [`FetchTrigger::resource`], pure; errors are
//! classified as submissions are (a 404 or an unparsable resource is
//! permanent — dead-lettered —, a 5xx or a timeout transient — retried).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use serde_json::Value;

use crate::sensor::argo::fetch::{Fetch, FetchTrigger, Fetched};
use crate::submit::{SubmitError, Submitter};

/// The longest a URL source may take, and the most it may send.
const URL_TIMEOUT: Duration = Duration::from_secs(10);
const URL_MAX_BYTES: usize = 4 << 20;

/// Reads what `f` reads and makes it the resource.
pub async fn fetch(
    f: &FetchTrigger,
    submitter: &dyn Submitter,
    namespace: Option<&str>,
) -> Result<Value, SubmitError> {
    let invalid = |m: String| SubmitError::rejected(422, "Invalid", m);
    let fetched = match &f.fetch {
        Fetch::File(path) => Fetched::Text(
            tokio::fs::read_to_string(path)
                .await
                .map_err(|e| invalid(format!("{}: {e}", f.describe())))?,
        ),
        Fetch::ConfigMap { name, key } => {
            let cm = submitter.get("v1", "ConfigMap", namespace, name).await?;
            match cm["data"][key].as_str() {
                Some(text) => Fetched::Text(text.to_string()),
                None => return Err(invalid(format!("{}: no such key", f.describe()))),
            }
        }
        Fetch::CronWorkflow { name } => Fetched::Object(
            submitter
                .get("argoproj.io/v1alpha1", "CronWorkflow", namespace, name)
                .await?,
        ),
        Fetch::Url { url, verify_cert } => Fetched::Text(get(url, *verify_cert).await?),
    };
    f.resource(fetched).map_err(invalid)
}

/// `GET url`: the body of a 200 as text. Unreachable, timed out or 5xx:
/// transient; any other status: permanent.
async fn get(url: &str, verify_cert: bool) -> Result<String, SubmitError> {
    use hyper_util::client::legacy::Client;
    let transient = |message: String| SubmitError::Transient {
        message,
        retry_after: None,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| SubmitError::rejected(422, "Invalid", format!("url {url}: {e}")))?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if verify_cert {
        builder
            .with_native_roots()
            .map_err(|e| transient(format!("url {url}: no CA certificates: {e}")))?
    } else {
        builder.with_tls_config(
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate::new()))
                .with_no_client_auth(),
        )
    };
    let connector = builder.https_or_http().enable_http1().build();
    let client: Client<_, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let response = tokio::time::timeout(URL_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| transient(format!("url {url}: no answer in {URL_TIMEOUT:?}")))?
        .map_err(|e| transient(format!("url {url}: {}", chain(&e))))?;
    let status = response.status();
    let body = tokio::time::timeout(
        URL_TIMEOUT,
        Limited::new(response.into_body(), URL_MAX_BYTES).collect(),
    )
    .await
    .map_err(|_| transient(format!("url {url}: the body took over {URL_TIMEOUT:?}")))?
    .map_err(|e| transient(format!("url {url}: reading the body: {e}")))?
    .to_bytes();
    if status.is_server_error() {
        return Err(transient(format!("url {url}: {status}")));
    }
    if status != http::StatusCode::OK {
        return Err(SubmitError::rejected(
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error"),
            format!("url {url}: {status} (200 required)"),
        ));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| SubmitError::rejected(422, "Invalid", format!("url {url}: not UTF-8 text")))
}

/// An error with its causes (`client error (Connect): invalid peer
/// certificate: UnknownIssuer`): hyper's own text names only the stage.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// `verifyCert: false`: any certificate chain is accepted (the handshake's
/// signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AnyCertificate {
    fn new() -> Self {
        AnyCertificate(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
