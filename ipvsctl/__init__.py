"""ipvsctl: Kubernetes Services → Linux IPVS virtual servers, over netlink."""

__version__ = "0.1.0"
