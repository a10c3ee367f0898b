//! Sending one export request over OTLP/gRPC or OTLP/HTTP (protobuf), for traces or metrics.

use std::io::Write;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
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

#[derive(Clone)]
pub enum Transport {
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
        gzip: bool,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
        gzip: bool,
    },
}

impl Transport {
    /// Build without connecting (the collector may be down at start). `endpoint` is the gRPC
    /// server or the full HTTP URL of the signal.
    pub fn new(cfg: &OtlpConfig, endpoint: &str) -> Result<Self, TransportError> {
        let gzip = cfg.compression == Compression::Gzip;
        match cfg.protocol {
            OtlpProtocol::Grpc => {
                let bad = |e: &dyn std::fmt::Display| {
                    TransportError::Endpoint(endpoint.to_string(), e.to_string())
                };
                let mut ep = Endpoint::from_shared(endpoint.to_string())
                    .map_err(|e| bad(&e))?
                    .timeout(cfg.timeout)
                    .connect_timeout(cfg.timeout);
                if endpoint.starts_with("https://") {
                    ep = ep
                        .tls_config(ClientTlsConfig::new().with_webpki_roots())
                        .map_err(|e| bad(&e))?;
                }
                let mut metadata = MetadataMap::new();
                for (k, v) in &cfg.headers {
                    let key = AsciiMetadataKey::from_bytes(k.as_bytes())
                        .map_err(|_| TransportError::Header(k.clone()))?;
                    let val = AsciiMetadataValue::try_from(v.as_str())
                        .map_err(|_| TransportError::Header(k.clone()))?;
                    metadata.insert(key, val);
                }
                Ok(Transport::Grpc {
                    channel: ep.connect_lazy(),
                    metadata,
                    gzip,
                })
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
                    url: endpoint.to_string(),
                    headers,
                    gzip,
                })
            }
        }
    }

    /// Sends a trace export request that is already protobuf-encoded.
    pub async fn send_encoded(&mut self, body: bytes::Bytes) -> Result<(), SendError> {
        match self {
            Transport::Grpc {
                channel,
                metadata,
                gzip,
            } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                if *gzip {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                grpc.ready().await.map_err(|e| SendError {
                    retryable: true,
                    message: format!("gRPC channel: {e}"),
                })?;
                let mut r = tonic::Request::new(body);
                *r.metadata_mut() = metadata.clone();
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                );
                grpc.unary(r, path, super::rawcodec::RawCodec)
                    .await
                    .map(|_| ())
                    .map_err(grpc_error)
            }
            Transport::Http { .. } => self.post(body.to_vec()).await,
        }
    }

    pub async fn send_metrics(
        &mut self,
        req: ExportMetricsServiceRequest,
    ) -> Result<(), SendError> {
        match self {
            Transport::Grpc {
                channel,
                metadata,
                gzip,
            } => {
                let mut client = MetricsServiceClient::new(channel.clone());
                if *gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = metadata.clone();
                client.export(r).await.map(|_| ()).map_err(grpc_error)
            }
            Transport::Http { .. } => self.post(req.encode_to_vec()).await,
        }
    }

    async fn post(&self, mut body: Vec<u8>) -> Result<(), SendError> {
        let Transport::Http {
            client,
            url,
            headers,
            gzip,
        } = self
        else {
            return Err(SendError {
                retryable: false,
                message: "not an HTTP transport".into(),
            });
        };
        let mut rb = client
            .post(url.as_str())
            .headers(headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
        if *gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            match enc.write_all(&body).and_then(|_| enc.finish()) {
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
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => {
                let code = resp.status().as_u16();
                Err(SendError {
                    retryable: http_retryable(code),
                    message: format!("HTTP {code}"),
                })
            }
            Err(e) => Err(SendError {
                retryable: true,
                message: format!("HTTP request: {e}"),
            }),
        }
    }
}

fn grpc_error(st: tonic::Status) -> SendError {
    SendError {
        retryable: grpc_retryable(st.code()),
        message: format!("gRPC {:?}: {}", st.code(), st.message()),
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
