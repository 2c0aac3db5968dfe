//! hakube-firstboot: forms the cluster at first boot. (Skeleton.)
