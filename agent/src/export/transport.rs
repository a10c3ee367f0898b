//! Sending one export request over OTLP/gRPC or OTLP/HTTP (protobuf).

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::exportcfg::{Compression, OtlpConfig, OtlpProtocol};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid OTLP endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("invalid OTLP header {0:?}")]
    Header(String),
    #[error("cannot build HTTP client: {0}")]
    Client(String),
}

/// Why one send failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub retryable: bool,
    pub message: String,
}

pub enum Transport {
    Grpc {
        client: TraceServiceClient<Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
        gzip: bool,
    },
}

impl Transport {
    /// Build without connecting (the collector may be down at start).
    pub fn new(cfg: &OtlpConfig) -> Result<Self, TransportError> {
        match cfg.protocol {
            OtlpProtocol::Grpc => {
                let mut ep = Endpoint::from_shared(cfg.endpoint.clone())
                    .map_err(|e| TransportError::Endpoint(cfg.endpoint.clone(), e.to_string()))?
                    .timeout(cfg.timeout)
                    .connect_timeout(cfg.timeout);
                if cfg.endpoint.starts_with("https://") {
                    ep = ep
                        .tls_config(ClientTlsConfig::new().with_webpki_roots())
                        .map_err(|e| {
                            TransportError::Endpoint(cfg.endpoint.clone(), e.to_string())
                        })?;
                }
                let mut client = TraceServiceClient::new(ep.connect_lazy());
                if cfg.compression == Compression::Gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                let mut metadata = MetadataMap::new();
                for (k, v) in &cfg.headers {
                    let key = AsciiMetadataKey::from_bytes(k.as_bytes())
                        .map_err(|_| TransportError::Header(k.clone()))?;
                    let val = AsciiMetadataValue::try_from(v.as_str())
                        .map_err(|_| TransportError::Header(k.clone()))?;
                    metadata.insert(key, val);
                }
                Ok(Transport::Grpc { client, metadata })
            }
            OtlpProtocol::HttpProtobuf => {
                let client = reqwest::Client::builder()
                    .timeout(cfg.timeout)
                    .connect_timeout(cfg.timeout)
                    .build()
                    .map_err(|e| TransportError::Client(e.to_string()))?;
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| TransportError::Header(k.clone()))?;
                    let val = reqwest::header::HeaderValue::from_str(v)
                        .map_err(|_| TransportError::Header(k.clone()))?;
                    headers.insert(name, val);
                }
                Ok(Transport::Http {
                    client,
                    url: cfg.endpoint.clone(),
                    headers,
                    gzip: cfg.compression == Compression::Gzip,
                })
            }
        }
    }

    pub async fn send(&mut self, req: ExportTraceServiceRequest) -> Result<(), SendError> {
        match self {
            Transport::Grpc { client, metadata } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = metadata.clone();
                match client.export(r).await {
                    Ok(_) => Ok(()),
                    Err(st) => Err(SendError {
                        retryable: grpc_retryable(st.code()),
                        message: format!("gRPC {:?}: {}", st.code(), st.message()),
                    }),
                }
            }
            Transport::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let mut body = req.encode_to_vec();
                let mut rb = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                if *gzip {
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    let gz = enc.write_all(&body).and_then(|_| enc.finish());
                    match gz {
                        Ok(b) => {
                            body = b;
                            rb = rb.header(reqwest::header::CONTENT_ENCODING, "gzip");
                        }
                        Err(e) => {
                            return Err(SendError {
                                retryable: false,
                                message: format!("gzip: {e}"),
                            });
                        }
                    }
                }
                match rb.body(body).send().await {
                    Ok(resp) => {
                        let code = resp.status().as_u16();
                        if resp.status().is_success() {
                            Ok(())
                        } else {
                            Err(SendError {
                                retryable: http_retryable(code),
                                message: format!("HTTP {code}"),
                            })
                        }
                    }
                    Err(e) => Err(SendError {
                        retryable: true,
                        message: format!("HTTP request: {e}"),
                    }),
                }
            }
        }
    }
}

/// OTLP spec: these codes are retryable.
pub fn grpc_retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Cancelled
            | DeadlineExceeded
            | ResourceExhausted
            | Aborted
            | OutOfRange
            | Unavailable
            | DataLoss
    )
}

pub fn http_retryable(code: u16) -> bool {
    matches!(code, 429 | 502 | 503 | 504)
}
