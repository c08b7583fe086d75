#!/usr/bin/perl
# A third-party SMSC for smsgw's interop tests, on Perl Net::SMPP (Debian
# libnet-smpp-perl): neither our code nor our simulator. One child process per
# connection, since Net::SMPP's read_pdu blocks.
#
#   perl-smpp-smsc.pl --port P --log FILE [--bind-fail N] [--dlr-delay-ms MS] [--rules JSON]
#
# --bind-fail N refuses the first N connections' binds with ESME_RBINDFAIL.
# --rules is a JSON list matched by destination prefix (first match wins):
#   reject: true          answer submit_sm with ESME_RSUBMITFAIL
#   stat: "UNDELIV"       receipt status (default DELIVRD)
#   throttle_first: N     answer the first N submits of the session with ESME_RTHROTTLED
#   hold_ms: MS           answer submit_sm only after MS (a window that fills up)
#   dlr_first: true       send the receipt before the submit_sm_resp
#   drop_at: N            never answer; close the connection once N are outstanding
# Every bind, submit (with the text as decoded here), receipt and drop is appended to
# --log as one JSON object per line, for the tests to check.
use strict;
use warnings;
use Net::SMPP;
use IO::Select;
use JSON::PP;
use Encode qw(decode);
use Time::HiRes qw(time);
use Time::Local qw(timegm);

my %opt = (port => 2775, log => '/dev/null', 'bind-fail' => 0, 'dlr-delay-ms' => 100, rules => '[]');
while (@ARGV) {
    my ($k, $v) = (shift @ARGV, shift @ARGV);
    $k =~ s/^--// or die "bad argument $k\n";
    exists $opt{$k} or die "unknown option --$k\n";
    $opt{$k} = $v;
}
my $rules = decode_json($opt{rules});
my $json = JSON::PP->new->canonical->utf8;
open(my $log, '>>', $opt{log}) or die "log: $!";
$log->autoflush(1);
sub note { my %e = @_; $e{peer} = 'perl'; $e{at} = time; print $log $json->encode(\%e), "\n"; }

$SIG{CHLD} = 'IGNORE';
my $listen = Net::SMPP->new_listen('127.0.0.1', port => $opt{port}, smpp_version => 0x34)
    or die "listen on $opt{port}: $!";
$| = 1;
print "perl-smpp-smsc ready on $opt{port}\n";
my $conn = 0;
while (1) {
    my $c = $listen->accept or next;
    $conn++;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        undef $listen;
        serve($c, $conn);
        exit 0;
    }
    close $c;
}

sub rule_for {
    my ($dest) = @_;
    for my $r (@$rules) { return $r if index($dest, $r->{prefix}) == 0; }
    return {};
}

# The text and concatenation info of a submit_sm, decoded here from the raw octets.
sub decode_submit {
    my ($pdu) = @_;
    my $octets = $pdu->{short_message};
    $octets = $pdu->{message_payload} if !length($octets) && defined $pdu->{message_payload};
    my $concat;
    if ($pdu->{esm_class} & 0x40) {
        my $udhl = ord(substr($octets, 0, 1));
        my $udh = substr($octets, 1, $udhl);
        $octets = substr($octets, 1 + $udhl);
        my $i = 0;
        while ($i + 1 < length $udh) {
            my ($iei, $len) = unpack 'CC', substr($udh, $i, 2);
            my $data = substr($udh, $i + 2, $len);
            $concat = [unpack 'CCC', $data] if $iei == 0x00 && $len == 3;
            $concat = [unpack 'nCC', $data] if $iei == 0x08 && $len == 4;
            $i += 2 + $len;
        }
    } elsif (defined $pdu->{sar_msg_ref_num}) {
        $concat = [unpack('n', $pdu->{sar_msg_ref_num}), ord($pdu->{sar_total_segments}),
                   ord($pdu->{sar_segment_seqnum})];
    }
    my $dc = $pdu->{data_coding};
    my $text = $dc == 8 ? decode('UTF-16BE', $octets) : $dc == 0 ? decode('gsm0338', $octets) : $octets;
    return ($text, $concat);
}

# An SMPP absolute time, YYMMDDhhmmsstnnp, as Unix ms (undef when empty or relative).
sub smpp_ms {
    my ($t) = @_;
    return undef unless defined $t && $t =~ /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d)(\d\d)([+-])$/;
    my $utc = timegm($6, $5, $4, $3, $2 - 1, 2000 + $1) + $7 / 10;
    my $offset = $8 * 15 * 60;
    $utc += $9 eq '+' ? -$offset : $offset;
    return int($utc * 1000 + 0.5);
}

sub serve {
    my ($c, $n) = @_;
    my $sel = IO::Select->new($c);
    my (@held, @dlrs, %seen);
    my $outstanding = 0;
    my $next_id = 0x5000 + $n * 0x10000;
    my $answer = sub {
        my ($h) = @_;
        my $rule = $h->{rule};
        my $id = sprintf('%X', $next_id++);
        my $stat = $rule->{stat} // 'DELIVRD';
        my $receipt = {id => $id, dest => $h->{dest}, stat => $stat, due => time + $opt{'dlr-delay-ms'} / 1000};
        if ($rule->{dlr_first} && ($h->{rd} & 3)) {
            send_dlr($c, $receipt, 1);
            undef $receipt;
        }
        $c->submit_sm_resp(seq => $h->{seq}, message_id => $id);
        $outstanding--;
        push @dlrs, $receipt if $receipt && ($h->{rd} & 3);
    };
    while (1) {
        my $now = time;
        my @due = sort { $a <=> $b } map { $_->{due} } (@held, @dlrs);
        my $wait = @due ? ($due[0] > $now ? $due[0] - $now : 0) : undef;
        if ($sel->can_read($wait)) {
            my $pdu = $c->read_pdu or exit 0;
            my $cmd = $pdu->{cmd};
            if ($cmd == 0x09 || $cmd == 0x01 || $cmd == 0x02) {
                my $mode = {9 => 'trx', 1 => 'rx', 2 => 'tx'}->{$cmd};
                my $ok = $n > $opt{'bind-fail'};
                my $resp = {9 => 'bind_transceiver_resp', 1 => 'bind_receiver_resp', 2 => 'bind_transmitter_resp'}->{$cmd};
                $c->$resp(seq => $pdu->{seq}, system_id => 'perl-smsc', status => $ok ? 0 : 0x0D);
                note(ev => 'bind', mode => $mode, ok => $ok ? JSON::PP::true : JSON::PP::false, conn => $n);
                exit 0 unless $ok;
            } elsif ($cmd == 0x04) {
                my $dest = $pdu->{destination_addr};
                my $rule = rule_for($dest);
                my $prefix = $rule->{prefix} // '';
                my $count = ++$seen{$prefix};
                my ($text, $concat) = decode_submit($pdu);
                my %ev = (ev => 'submit', dest => $dest, esm => $pdu->{esm_class}, dc => $pdu->{data_coding},
                          rd => $pdu->{registered_delivery}, text => $text, concat => $concat,
                          validity_ms => smpp_ms($pdu->{validity_period}),
                          schedule_ms => smpp_ms($pdu->{schedule_delivery_time}));
                if ($rule->{throttle_first} && $count <= $rule->{throttle_first}) {
                    $c->submit_sm_resp(seq => $pdu->{seq}, message_id => '', status => 0x58);
                    note(%ev, status => 0x58);
                    next;
                }
                if ($rule->{reject}) {
                    $c->submit_sm_resp(seq => $pdu->{seq}, message_id => '', status => 0x45);
                    note(%ev, status => 0x45);
                    next;
                }
                $outstanding++;
                note(%ev, status => 0, outstanding => $outstanding, conn => $n);
                my $h = {seq => $pdu->{seq}, dest => $dest, rule => $rule, rd => $pdu->{registered_delivery}};
                if ($rule->{drop_at}) {
                    if ($outstanding >= $rule->{drop_at}) {
                        note(ev => 'drop', outstanding => $outstanding);
                        exit 0;
                    }
                    next;
                }
                if ($rule->{hold_ms}) {
                    $h->{due} = time + $rule->{hold_ms} / 1000;
                    push @held, $h;
                    next;
                }
                $answer->($h);
            } elsif ($cmd == 0x15) {
                $c->enquire_link_resp(seq => $pdu->{seq});
            } elsif ($cmd == 0x06) {
                $c->unbind_resp(seq => $pdu->{seq});
                exit 0;
            } elsif ($cmd & 0x80000000) {
                # deliver_sm_resp, enquire_link_resp, generic_nack: nothing to do.
            } else {
                $c->generic_nack(seq => $pdu->{seq}, status => 0x03);
            }
        }
        $now = time;
        my @ready = grep { $_->{due} <= $now } @held;
        @held = grep { $_->{due} > $now } @held;
        $answer->($_) for @ready;
        my @send = grep { $_->{due} <= $now } @dlrs;
        @dlrs = grep { $_->{due} > $now } @dlrs;
        send_dlr($c, $_, 0) for @send;
    }
}

sub send_dlr {
    my ($c, $r, $before_resp) = @_;
    my @t = gmtime;
    my $date = sprintf('%02d%02d%02d%02d%02d', $t[5] % 100, $t[4] + 1, $t[3], $t[2], $t[1]);
    my $state = $r->{stat} eq 'DELIVRD' ? 2 : 5;
    my $text = "id:$r->{id} sub:001 dlvrd:" . ($state == 2 ? '001' : '000')
        . " submit date:$date done date:$date stat:$r->{stat} err:000 text:";
    # Net::SMPP packs named TLVs as raw bytes.
    $c->deliver_sm(source_addr => $r->{dest}, destination_addr => '', esm_class => 0x04,
                   short_message => $text, async => 1,
                   receipted_message_id => "$r->{id}\0", message_state => pack('C', $state));
    note(ev => 'dlr', id => $r->{id}, before_resp => $before_resp ? JSON::PP::true : JSON::PP::false);
}
