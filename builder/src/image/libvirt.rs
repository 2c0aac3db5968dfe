//! A libvirt domain per node: UEFI (secure boot off: systemd-boot is
//! unsigned), q35, virtio disk and network on libvirt's `default` network
//! with the node's MAC, serial console, and the qemu-guest-agent channel.

use crate::spec::Node;
use hakube_node_profile::Role;
use std::path::Path;

/// Memory (MiB) and vCPUs per role.
pub fn sizing(role: Role) -> (u32, u32) {
    match role {
        Role::Master => (4096, 2),
        Role::Worker => (4096, 2),
        Role::Etcd => (2048, 2),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The domain XML; `disk` should be an absolute path.
pub fn domain_xml(cluster: &str, node: &Node, disk: &Path) -> String {
    let (mem, vcpus) = sizing(node.role);
    let name = esc(&format!("{cluster}-{}", node.name.as_str()));
    let disk = esc(&disk.display().to_string());
    let mac = esc(&node.mac.to_string());
    let role = node.role.as_str();
    format!(
        r#"<domain type='kvm'>
  <name>{name}</name>
  <description>hakube {role} node {node_name} of cluster {cluster_e}</description>
  <memory unit='MiB'>{mem}</memory>
  <currentMemory unit='MiB'>{mem}</currentMemory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <firmware>
      <feature enabled='no' name='secure-boot'/>
      <feature enabled='no' name='enrolled-keys'/>
    </firmware>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='host-passthrough'/>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='{mac}'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
    <video>
      <model type='virtio'/>
    </video>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
  </devices>
  <!-- The disk holds this node's keys, so it is 0600 (0640 and a group when
       built with the image-group option). libvirt's DAC driver relabels it for
       the life of the domain: the qemu process (qemu.conf's user and group)
       owns it while the domain runs, its owner gets it back after. This is
       libvirt's default with dynamic_ownership = 1; saying it here keeps a
       0600 image bootable where a site default differs. -->
  <seclabel type='dynamic' model='dac' relabel='yes'/>
</domain>
"#,
        node_name = esc(node.name.as_str()),
        cluster_e = esc(cluster),
    )
}
