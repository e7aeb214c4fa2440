//! The in-process S3 server used by the tests and the client suite: s3s-fs over a directory
//! (each top-level folder a bucket), behind s3s's SigV4 verification with one access key.

/// An S3 service over `root` that accepts only requests signed with `access_key`/`secret_key`.
pub fn s3s_service(root: &std::path::Path, access_key: &str, secret_key: &str) -> s3s::service::S3Service {
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs opens its root");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(access_key, secret_key));
    builder.build()
}
