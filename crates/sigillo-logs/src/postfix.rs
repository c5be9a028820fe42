//! Postfix: line parser and correlator (smtpd sessions joined by pid to queue ids and qmgr; smtp deliveries joined to their TLS connection).
