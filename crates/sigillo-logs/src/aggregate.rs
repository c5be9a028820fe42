//! Figures from records: TLS share per direction, day, hour, peer and TLS version; top plaintext peers; downgrades.
