//! Hand-written proptest strategies for every record, request and response of the protocol.
#![allow(dead_code)]

use proptest::prelude::*;
use rookery_protocol::*;

/// Builds a strategy for a jute record from one strategy per field, in declaration order.
macro_rules! record_strategy {
    ($fn:ident, $ty:ident { $($field:ident : $strat:expr),* $(,)? }) => {
        pub fn $fn() -> impl Strategy<Value = $ty> + Clone {
            ($($strat,)*).prop_map(|($($field,)*)| $ty { $($field),* })
        }
    };
}

/// Paths, schemes and other ustrings: mostly ASCII, sometimes any Unicode.
pub fn ustring() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => "[a-z/._-]{0,12}",
        1 => "\\PC{0,8}",
    ]
}

pub fn buffer() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(any::<u8>(), 0..24)
}

/// Znode data: null (`None`, length -1 on the wire) as well as empty and non-empty buffers.
pub fn opt_buffer() -> impl Strategy<Value = Option<Vec<u8>>> + Clone {
    prop::option::weighted(0.8, buffer())
}

pub fn strings() -> impl Strategy<Value = Vec<String>> + Clone {
    prop::collection::vec(ustring(), 0..4)
}

pub fn acls() -> impl Strategy<Value = Vec<Acl>> + Clone {
    prop::collection::vec(acl(), 0..3)
}

record_strategy!(
    id,
    Id {
        scheme: ustring(),
        id: ustring()
    }
);
record_strategy!(
    acl,
    Acl {
        perms: any::<i32>(),
        id: id()
    }
);
record_strategy!(
    stat,
    Stat {
        czxid: any::<i64>(),
        mzxid: any::<i64>(),
        ctime: any::<i64>(),
        mtime: any::<i64>(),
        version: any::<i32>(),
        cversion: any::<i32>(),
        aversion: any::<i32>(),
        ephemeral_owner: any::<i64>(),
        data_length: any::<i32>(),
        num_children: any::<i32>(),
        pzxid: any::<i64>(),
    }
);
record_strategy!(
    client_info,
    ClientInfo {
        auth_scheme: ustring(),
        user: ustring()
    }
);
record_strategy!(
    set_watches,
    SetWatches {
        relative_zxid: any::<i64>(),
        data_watches: strings(),
        exist_watches: strings(),
        child_watches: strings(),
    }
);
record_strategy!(
    set_watches2,
    SetWatches2 {
        relative_zxid: any::<i64>(),
        data_watches: strings(),
        exist_watches: strings(),
        child_watches: strings(),
        persistent_watches: strings(),
        persistent_recursive_watches: strings(),
    }
);
record_strategy!(
    request_header,
    RequestHeader {
        xid: any::<i32>(),
        op_type: any::<i32>()
    }
);
record_strategy!(
    multi_header,
    MultiHeader {
        op_type: any::<i32>(),
        done: any::<bool>(),
        err: any::<i32>()
    }
);
record_strategy!(
    auth_packet,
    AuthPacket {
        auth_type: any::<i32>(),
        scheme: ustring(),
        auth: buffer()
    }
);
record_strategy!(
    reply_header,
    ReplyHeader {
        xid: any::<i32>(),
        zxid: any::<i64>(),
        err: any::<i32>()
    }
);
record_strategy!(
    get_data_request,
    GetDataRequest {
        path: ustring(),
        watch: any::<bool>()
    }
);
record_strategy!(
    set_data_request,
    SetDataRequest {
        path: ustring(),
        data: opt_buffer(),
        version: any::<i32>()
    }
);
record_strategy!(
    reconfig_request,
    ReconfigRequest {
        joining_servers: prop::option::of(ustring()),
        leaving_servers: prop::option::of(ustring()),
        new_members: prop::option::of(ustring()),
        cur_config_id: any::<i64>(),
    }
);
record_strategy!(set_data_response, SetDataResponse { stat: stat() });
record_strategy!(get_sasl_request, GetSaslRequest { token: buffer() });
record_strategy!(set_sasl_request, SetSaslRequest { token: buffer() });
record_strategy!(
    set_sasl_response,
    SetSaslResponse {
        token: opt_buffer()
    }
);
record_strategy!(
    create_request,
    CreateRequest {
        path: ustring(),
        data: opt_buffer(),
        acl: acls(),
        flags: any::<i32>()
    }
);
record_strategy!(
    create_ttl_request,
    CreateTtlRequest {
        path: ustring(),
        data: opt_buffer(),
        acl: acls(),
        flags: any::<i32>(),
        ttl: any::<i64>(),
    }
);
record_strategy!(
    delete_request,
    DeleteRequest {
        path: ustring(),
        version: any::<i32>()
    }
);
record_strategy!(
    get_children_request,
    GetChildrenRequest {
        path: ustring(),
        watch: any::<bool>()
    }
);
record_strategy!(
    get_all_children_number_request,
    GetAllChildrenNumberRequest { path: ustring() }
);
record_strategy!(
    get_children2_request,
    GetChildren2Request {
        path: ustring(),
        watch: any::<bool>()
    }
);
record_strategy!(
    check_version_request,
    CheckVersionRequest {
        path: ustring(),
        version: any::<i32>()
    }
);
record_strategy!(sync_request, SyncRequest { path: ustring() });
record_strategy!(sync_response, SyncResponse { path: ustring() });
record_strategy!(get_acl_request, GetAclRequest { path: ustring() });
record_strategy!(
    set_acl_request,
    SetAclRequest {
        path: ustring(),
        acl: acls(),
        version: any::<i32>()
    }
);
record_strategy!(set_acl_response, SetAclResponse { stat: stat() });
record_strategy!(
    add_watch_request,
    AddWatchRequest {
        path: ustring(),
        mode: any::<i32>()
    }
);
record_strategy!(
    watcher_event,
    WatcherEvent {
        event_type: any::<i32>(),
        state: any::<i32>(),
        path: ustring()
    }
);
record_strategy!(error_response, ErrorResponse { err: any::<i32>() });
record_strategy!(create_response, CreateResponse { path: ustring() });
record_strategy!(
    create2_response,
    Create2Response {
        path: ustring(),
        stat: stat()
    }
);
record_strategy!(
    exists_request,
    ExistsRequest {
        path: ustring(),
        watch: any::<bool>()
    }
);
record_strategy!(exists_response, ExistsResponse { stat: stat() });
record_strategy!(
    get_data_response,
    GetDataResponse {
        data: opt_buffer(),
        stat: stat()
    }
);
record_strategy!(
    get_children_response,
    GetChildrenResponse {
        children: strings()
    }
);
record_strategy!(
    get_all_children_number_response,
    GetAllChildrenNumberResponse {
        total_number: any::<i32>()
    }
);
record_strategy!(
    get_children2_response,
    GetChildren2Response {
        children: strings(),
        stat: stat()
    }
);
record_strategy!(
    get_acl_response,
    GetAclResponse {
        acl: acls(),
        stat: stat()
    }
);
record_strategy!(
    check_watches_request,
    CheckWatchesRequest {
        path: ustring(),
        watcher_type: any::<i32>()
    }
);
record_strategy!(
    remove_watches_request,
    RemoveWatchesRequest {
        path: ustring(),
        watcher_type: any::<i32>()
    }
);
record_strategy!(
    get_ephemerals_request,
    GetEphemeralsRequest {
        prefix_path: ustring()
    }
);
record_strategy!(
    get_ephemerals_response,
    GetEphemeralsResponse {
        ephemerals: strings()
    }
);
record_strategy!(
    who_am_i_response,
    WhoAmIResponse {
        client_info: prop::collection::vec(client_info(), 0..3)
    }
);
record_strategy!(
    connect_request,
    ConnectRequest {
        protocol_version: any::<i32>(),
        last_zxid_seen: any::<i64>(),
        time_out: any::<i32>(),
        session_id: any::<i64>(),
        passwd: buffer(),
        read_only: any::<Option<bool>>(),
    }
);
record_strategy!(
    connect_response,
    ConnectResponse {
        protocol_version: any::<i32>(),
        time_out: any::<i32>(),
        session_id: any::<i64>(),
        passwd: buffer(),
        read_only: any::<Option<bool>>(),
    }
);

/// The opcodes that carry a CreateRequest.
pub fn create_op() -> impl Strategy<Value = OpCode> + Clone {
    prop::sample::select(vec![
        OpCode::Create,
        OpCode::Create2,
        OpCode::CreateContainer,
    ])
}

/// Every MultiOp variant.
pub fn multi_op() -> impl Strategy<Value = MultiOp> + Clone {
    prop_oneof![
        (create_op(), create_request()).prop_map(|(op, req)| MultiOp::Create { op, req }),
        create_ttl_request().prop_map(MultiOp::CreateTtl),
        delete_request().prop_map(MultiOp::Delete),
        set_data_request().prop_map(MultiOp::SetData),
        check_version_request().prop_map(MultiOp::Check),
        get_children_request().prop_map(MultiOp::GetChildren),
        get_data_request().prop_map(MultiOp::GetData),
    ]
}

pub fn multi_ops() -> impl Strategy<Value = Vec<MultiOp>> + Clone {
    prop::collection::vec(multi_op(), 0..5)
}

/// Every Request variant.
pub fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (create_op(), create_request()).prop_map(|(op, req)| Request::Create { op, req }),
        create_ttl_request().prop_map(Request::CreateTtl),
        delete_request().prop_map(Request::Delete),
        sync_request().prop_map(Request::DeleteContainer),
        exists_request().prop_map(Request::Exists),
        get_data_request().prop_map(Request::GetData),
        set_data_request().prop_map(Request::SetData),
        get_acl_request().prop_map(Request::GetAcl),
        set_acl_request().prop_map(Request::SetAcl),
        get_children_request().prop_map(Request::GetChildren),
        get_children2_request().prop_map(Request::GetChildren2),
        sync_request().prop_map(Request::Sync),
        Just(Request::Ping),
        check_version_request().prop_map(Request::Check),
        multi_ops().prop_map(Request::Multi),
        multi_ops().prop_map(Request::MultiRead),
        reconfig_request().prop_map(Request::Reconfig),
        check_watches_request().prop_map(Request::CheckWatches),
        remove_watches_request().prop_map(Request::RemoveWatches),
        auth_packet().prop_map(Request::Auth),
        set_watches().prop_map(Request::SetWatches),
        set_watches2().prop_map(Request::SetWatches2),
        get_sasl_request().prop_map(Request::Sasl),
        get_ephemerals_request().prop_map(Request::GetEphemerals),
        get_all_children_number_request().prop_map(Request::GetAllChildrenNumber),
        add_watch_request().prop_map(Request::AddWatch),
        Just(Request::WhoAmI),
        Just(Request::CloseSession),
    ]
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> + Clone {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

/// Every MultiResult variant.
pub fn multi_result() -> impl Strategy<Value = MultiResult> + Clone {
    prop_oneof![
        ustring().prop_map(MultiResult::Create),
        (ustring(), stat()).prop_map(|(p, s)| MultiResult::Create2(p, s)),
        Just(MultiResult::Delete),
        stat().prop_map(MultiResult::SetData),
        Just(MultiResult::Check),
        strings().prop_map(MultiResult::GetChildren),
        (opt_buffer(), stat()).prop_map(|(d, s)| MultiResult::GetData(d, s)),
        error_code().prop_map(MultiResult::Error),
    ]
}

/// Every Response variant, with an opcode whose reply has that shape.
pub fn response() -> impl Strategy<Value = (OpCode, Response)> {
    let stat_op = prop::sample::select(vec![OpCode::Exists, OpCode::SetData, OpCode::SetAcl]);
    let empty_op = prop::sample::select(vec![
        OpCode::Delete,
        OpCode::Ping,
        OpCode::Check,
        OpCode::Auth,
        OpCode::SetWatches,
        OpCode::SetWatches2,
        OpCode::CheckWatches,
        OpCode::RemoveWatches,
        OpCode::CloseSession,
        OpCode::DeleteContainer,
    ]);
    let create2_op = prop::sample::select(vec![
        OpCode::Create2,
        OpCode::CreateContainer,
        OpCode::CreateTtl,
    ]);
    let get_data_op = prop::sample::select(vec![OpCode::GetData, OpCode::Reconfig]);
    let multi_op = prop::sample::select(vec![OpCode::Multi, OpCode::MultiRead]);
    prop_oneof![
        empty_op.prop_map(|op| (op, Response::Empty)),
        error_response().prop_map(|r| (OpCode::AddWatch, Response::Error(r))),
        create_response().prop_map(|r| (OpCode::Create, Response::Create(r))),
        (create2_op, create2_response()).prop_map(|(op, r)| (op, Response::Create2(r))),
        (stat_op, stat()).prop_map(|(op, s)| (op, Response::Stat(s))),
        (get_data_op, get_data_response()).prop_map(|(op, r)| (op, Response::GetData(r))),
        get_acl_response().prop_map(|r| (OpCode::GetAcl, Response::GetAcl(r))),
        get_children_response().prop_map(|r| (OpCode::GetChildren, Response::GetChildren(r))),
        get_children2_response().prop_map(|r| (OpCode::GetChildren2, Response::GetChildren2(r))),
        sync_response().prop_map(|r| (OpCode::Sync, Response::Sync(r))),
        (multi_op, prop::collection::vec(multi_result(), 0..5))
            .prop_map(|(op, rs)| (op, Response::Multi(rs))),
        get_ephemerals_response().prop_map(|r| (OpCode::GetEphemerals, Response::GetEphemerals(r))),
        get_all_children_number_response().prop_map(|r| (
            OpCode::GetAllChildrenNumber,
            Response::GetAllChildrenNumber(r)
        )),
        who_am_i_response().prop_map(|r| (OpCode::WhoAmI, Response::WhoAmI(r))),
        set_sasl_response().prop_map(|r| (OpCode::Sasl, Response::Sasl(r))),
    ]
}

/// Invokes `$m!(StrategyFn, Type)` once per record type of records.rs.
#[macro_export]
macro_rules! for_each_record {
    ($m:ident) => {
        $m!(id, Id);
        $m!(acl, Acl);
        $m!(stat, Stat);
        $m!(client_info, ClientInfo);
        $m!(set_watches, SetWatches);
        $m!(set_watches2, SetWatches2);
        $m!(request_header, RequestHeader);
        $m!(multi_header, MultiHeader);
        $m!(auth_packet, AuthPacket);
        $m!(reply_header, ReplyHeader);
        $m!(get_data_request, GetDataRequest);
        $m!(set_data_request, SetDataRequest);
        $m!(reconfig_request, ReconfigRequest);
        $m!(set_data_response, SetDataResponse);
        $m!(get_sasl_request, GetSaslRequest);
        $m!(set_sasl_request, SetSaslRequest);
        $m!(set_sasl_response, SetSaslResponse);
        $m!(create_request, CreateRequest);
        $m!(create_ttl_request, CreateTtlRequest);
        $m!(delete_request, DeleteRequest);
        $m!(get_children_request, GetChildrenRequest);
        $m!(get_all_children_number_request, GetAllChildrenNumberRequest);
        $m!(get_children2_request, GetChildren2Request);
        $m!(check_version_request, CheckVersionRequest);
        $m!(sync_request, SyncRequest);
        $m!(sync_response, SyncResponse);
        $m!(get_acl_request, GetAclRequest);
        $m!(set_acl_request, SetAclRequest);
        $m!(set_acl_response, SetAclResponse);
        $m!(add_watch_request, AddWatchRequest);
        $m!(watcher_event, WatcherEvent);
        $m!(error_response, ErrorResponse);
        $m!(create_response, CreateResponse);
        $m!(create2_response, Create2Response);
        $m!(exists_request, ExistsRequest);
        $m!(exists_response, ExistsResponse);
        $m!(get_data_response, GetDataResponse);
        $m!(get_children_response, GetChildrenResponse);
        $m!(
            get_all_children_number_response,
            GetAllChildrenNumberResponse
        );
        $m!(get_children2_response, GetChildren2Response);
        $m!(get_acl_response, GetAclResponse);
        $m!(check_watches_request, CheckWatchesRequest);
        $m!(remove_watches_request, RemoveWatchesRequest);
        $m!(get_ephemerals_request, GetEphemeralsRequest);
        $m!(get_ephemerals_response, GetEphemeralsResponse);
        $m!(who_am_i_response, WhoAmIResponse);
        $m!(connect_request, ConnectRequest);
        $m!(connect_response, ConnectResponse);
    };
}
