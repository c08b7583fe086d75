#!/usr/bin/perl
# A third-party ESME for the SMPP server's interop tests, on Perl Net::SMPP (Debian's
# libnet-smpp-perl; not our code). It binds with a wrong password (and reports the
# status), then binds as a transmitter and submits: a short message, a UCS-2 one, a long
# one as two parts with SAR TLVs, and one to an invalid destination. Each result is one
# JSON line on stdout: {"case", "status", "id"}.
# Usage: perl perl-smpp-esme.pl PORT SYSTEM_ID PASSWORD
use strict;
use warnings;
use Net::SMPP;
use Encode qw(encode);

my ($port, $system_id, $password) = @ARGV;
$| = 1;

sub out {
    my ($case, $status, $id) = @_;
    $id = '' unless defined $id;
    $id =~ s/\0//g;
    printf "{\"case\":\"%s\",\"status\":%d,\"id\":\"%s\"}\n", $case, $status, $id;
}

my ($wrong, $refused) = Net::SMPP->new_transmitter('127.0.0.1', port => $port,
    system_id => $system_id, password => 'wrong', async => 0);
out('bad_password', defined $refused ? $refused->{status} : -1);

my ($smpp, $bound) = Net::SMPP->new_transmitter('127.0.0.1', port => $port,
    system_id => $system_id, password => $password, async => 0);
die "no connection" unless defined $smpp;
out('bind', $bound->{status});

sub submit {
    my ($case, %p) = @_;
    my $resp = $smpp->submit_sm(
        source_addr_ton => 5, source_addr => 'Shop',
        dest_addr_ton => 1, registered_delivery => 1,
        %p);
    out($case, $resp->{status}, $resp->{message_id});
}

submit('short', destination_addr => '447911123201', short_message => 'Hello from Perl');
submit('unicode', destination_addr => '447911123202', data_coding => 8,
    short_message => encode('UTF-16BE', "\x{41f}\x{440}\x{438}\x{432}\x{435}\x{442} Perl"));
# Net::SMPP packs named TLVs as raw bytes: sar_msg_ref_num is 2 octets, the others 1.
for my $seq (1, 2) {
    submit("sar_$seq", destination_addr => '447911123203',
        short_message => ($seq == 1 ? 'Perl long message, ' : 'in two SAR parts'),
        sar_msg_ref_num => pack('n', 0x0102), sar_total_segments => pack('C', 2),
        sar_segment_seqnum => pack('C', $seq));
}
submit('bad_destination', destination_addr => '12', short_message => 'nowhere');
my $un = $smpp->unbind();
out('unbind', $un->{status});
