//! Pod networking: bridge, taps, IPAM, NAT
