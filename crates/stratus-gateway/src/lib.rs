//! The gateway's pure parts: an app's route table, and the mapping between
//! an HTTP exchange and payload format 2.0 (as API Gateway HTTP APIs and
//! Lambda function URLs speak it).

pub mod payload;
pub mod route;
