//! OpenSMTPD: lines joined by session id (`smtp connected`, `smtp tls`, `smtp message`; `mta` for outbound).
